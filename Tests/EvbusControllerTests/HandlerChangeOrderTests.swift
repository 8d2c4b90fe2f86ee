import EvbusController
import Foundation
import Synchronization
import Testing

/// Issue 16 bug 1: a caller's `on`/`remove`/`install` takes effect before any dispatch that caller
/// makes afterwards, whichever thread it runs on and however busy the controller is.
@Suite struct HandlerChangeOrderTests {
    /// Keeps the controller's thread busy, so that the changes and dispatches queue behind it.
    func occupy(_ c: Controller) {
        c.submit { (_: Session) async in try? await Task.sleep(nanoseconds: 5_000_000) }
    }

    @Test(arguments: [false, true])
    func aHandlerAddedThenDispatchedToRunsForEveryDispatch(busy: Bool) async throws {
        let c = try Controller(name: "adds")
        defer { c.shutdown() }
        let runs = Atomic<Int>(0)
        if busy { occupy(c) }
        for i in 0..<200 {
            try c.on("e\(i)") { _ in runs.add(1, ordering: .relaxed); return nil }
            c.dispatch("e\(i)")
        }
        try await c.pending().value
        #expect(runs.load(ordering: .relaxed) == 200)
    }

    @Test(arguments: [false, true])
    func aRemovedHandlerNeverRunsForLaterDispatches(busy: Bool) async throws {
        let c = try Controller(name: "removes")
        defer { c.shutdown() }
        let late = Atomic<Int>(0)
        let removed = Atomic<Bool>(false)
        if busy { occupy(c) }
        for _ in 0..<20 {
            let id = try c.on("tick") { _ in
                if removed.load(ordering: .acquiring) { late.add(1, ordering: .relaxed) }
                return nil
            }
            c.dispatch("tick")
            c.remove(id)
            c.submit { _ in removed.store(true, ordering: .releasing) }
            c.dispatch("tick")
            c.submit { _ in removed.store(false, ordering: .releasing) }
        }
        try await c.pending().value
        #expect(late.load(ordering: .relaxed) == 0)
    }

    @Test func changesFromManyThreadsEachPrecedeThatThreadsDispatches() async throws {
        let c = try Controller(name: "threads")
        defer { c.shutdown() }
        occupy(c)
        let missed = Log<Int>()
        let hits = Log<Int>()
        await withTaskGroup(of: Void.self) { group in
            for t in 0..<4 {
                group.addTask {
                    for i in 0..<100 {
                        let event = "t\(t).\(i)"
                        let id = try! c.on(event) { _ in hits.add(t); return nil }
                        let result = c.dispatch(event)
                        c.remove(id)
                        c.dispatch(event)  // runs nothing: the handler is gone
                        if (try? await result.value.handlersRun) != 1 { missed.add(i) }
                    }
                }
            }
        }
        try await c.pending().value
        #expect(missed.all == [])
        #expect(hits.count == 400)
    }

    @Test func aBlueprintInstalledLaterIsInPlaceForTheNextDispatch() async throws {
        let c = try Controller(name: "later")
        defer { c.shutdown() }
        occupy(c)
        var blueprint = Blueprint()
        blueprint.on("ping") { _ in "pong" }
        try c.install(blueprint)
        #expect(try await c.dispatch("ping").value.results.first as? String == "pong")
    }

    @Test func aLateStartedHandlerRunsOnceAtOnce() async throws {
        let c = try Controller(name: "late-start")
        defer { c.shutdown() }
        let starts = Atomic<Int>(0)
        try c.on(Controller.Lifecycle.started) { _ in starts.add(1, ordering: .relaxed); return nil }
        try await c.pending().value
        #expect(starts.load(ordering: .relaxed) == 1)
        c.dispatch("anything")
        try await c.pending().value
        #expect(starts.load(ordering: .relaxed) == 1)
    }

    @Test func aBlueprintsStartedHandlerRunsOnceAtConstruction() async throws {
        let starts = Atomic<Int>(0)
        var blueprint = Blueprint()
        blueprint.on(Controller.Lifecycle.started) { _ in starts.add(1, ordering: .relaxed); return nil }
        let c = try Controller(name: "start", blueprints: [blueprint])
        defer { c.shutdown() }
        try await c.pending().value
        #expect(starts.load(ordering: .relaxed) == 1)
    }

    @Test func changesAfterShutdownAreRefused() async throws {
        let c = try Controller(name: "gone")
        c.shutdown()
        await c.stopped()
        #expect(throws: ControllerError.self) { try c.on("x") { _ in nil } }
        c.remove(HandlerIDs.any(on: c))  // no effect, no crash
        try await c.pending().value  // nothing outstanding on a stopped controller
        await c.idle()
    }
}

enum HandlerIDs {
    /// An id from another, live controller: removing it elsewhere does nothing.
    static func any(on _: Controller) -> HandlerID {
        let other = try! Controller(name: "ids")
        defer { other.shutdown() }
        return try! other.on("x") { _ in nil }
    }
}
