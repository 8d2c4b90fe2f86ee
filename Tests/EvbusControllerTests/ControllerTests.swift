import EvbusController
import EvbusIO
@_exported import EvbusTestSupport
import Foundation
import Synchronization
import Testing

/// Thread-safe list for observing handlers from tests.
final class Log<T: Sendable>: Sendable {
    let items = Mutex<[T]>([])
    func add(_ t: T) { items.withLock { $0.append(t) } }
    var all: [T] { items.withLock { $0 } }
    var count: Int { items.withLock { $0.count } }
}



struct Boom: Error, Equatable { var n = 1 }

/// Runs blocking (non-async) code on a plain thread, the way non-async callers use a controller.
func onPlainThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { c in
        Thread.detachNewThread { c.resume(with: Result { try body() }) }
    }
}

@Suite struct ControllerTests {
    @Test func handlersRunInDispatchOrderWithNoOverlapUnderManyThreads() async throws {
        let c = try Controller(name: "fifo")
        defer { c.shutdown() }
        let inside = Atomic<Int>(0)
        let overlaps = Atomic<Int>(0)
        let seen = Log<(Int, Int)>()
        try c.on("work") { s in
            if inside.add(1, ordering: .relaxed).newValue > 1 { overlaps.add(1, ordering: .relaxed) }
            seen.add(s.payload(as: (Int, Int).self)!)
            inside.subtract(1, ordering: .relaxed)
            return nil
        }
        await withTaskGroup(of: Void.self) { group in
            for t in 0..<8 {
                group.addTask { for i in 0..<1000 { c.dispatch("work", (t, i)) } }
            }
        }
        _ = try await c.submit { _ in }.value  // everything before it has run
        #expect(seen.count == 8000)
        #expect(overlaps.load(ordering: .relaxed) == 0)
        for t in 0..<8 { #expect(seen.all.filter { $0.0 == t }.map(\.1) == Array(0..<1000)) }
    }

    @Test func pendingCarriesResultsAndErrors() async throws {
        let c = try Controller()
        defer { c.shutdown() }
        try c.on("greet") { s in "hello, \(s.payload)" }
        try c.on("greet") { _ in 42 }
        let r = try await c.dispatch("greet", "Ada").value
        #expect(r.results.count == 2 && r.results[0] as? String == "hello, Ada" && r.results[1] as? Int == 42)
        #expect(try await c.submit { _ in 6 * 7 }.value == 42)
        try c.on("fail") { _ in throw Boom() }
        await #expect(throws: Boom.self) { try await c.dispatch("fail").value }
        await #expect(throws: Boom.self) { try await c.submit { _ -> Int in throw Boom(n: 2) }.value }
        #expect(try await c.dispatch("nobody").value.handlersRun == 0)
    }

    @Test func blockingWaitWorksOffTheLoopAndRefusesOnIt() async throws {
        let c = try Controller()
        defer { c.shutdown() }
        let value = try await onPlainThread { try c.submit { _ in "done" }.wait(timeout: .seconds(20)) }
        #expect(value == "done")
        // Waiting on the controller's own thread would deadlock: refused with a clear error.
        let inner = try await c.submit { (s: Session) throws -> String in
            do {
                _ = try s.controller.submit { _ in 1 }.wait()
                return "waited"
            } catch let e as ControllerError {
                return e.code.description
            }
        }.value
        #expect(inner == "would-deadlock")
    }

    @Test func sessionCarriesEventPayloadContextAndTimes() async throws {
        let c = try Controller()
        defer { c.shutdown() }
        try c.on("e") { s in
            #expect(s.event == "e")
            #expect(s.payload(as: Int.self) == 5)
            #expect(s["user"] as? String == "bob")
            #expect(s.startedAt >= s.dispatchedAt)
            #expect(s.controller === c)
            return "ok"
        }
        #expect(try await c.dispatch("e", 5, context: ["user": "bob"]).value.results.first as? String == "ok")
    }

    @Test func asyncHandlersAreAwaitedBeforeTheNextEventStarts() async throws {
        let c = try Controller()
        defer { c.shutdown() }
        let order = Log<String>()
        try c.on("slow") { (s: Session) async throws -> (any Sendable)? in
            order.add("slow start")
            try await Task.sleep(nanoseconds: 20_000_000)
            order.add("slow end")
            return nil
        }
        try c.on("fast") { _ in
            order.add("fast")
            return nil
        }
        c.dispatch("slow")
        _ = try await c.dispatch("fast").value
        #expect(order.all == ["slow start", "slow end", "fast"])
    }

    @Test func asyncHandlersRunOnTheControllersThread() async throws {
        let c = try Controller()
        defer { c.shutdown() }
        try c.on("where") { (s: Session) async throws -> (any Sendable)? in
            try await Task.sleep(nanoseconds: 1_000_000)
            return s.controller.loop.inEventLoop
        }
        #expect(try await c.dispatch("where").value.results.first as? Bool == true)
    }

    @Test func exceptionsAreReportedAndTheLoopContinues() async throws {
        let c = try Controller()
        defer { c.shutdown() }
        let failures = Log<String>()
        try c.on(Controller.Lifecycle.exception) { s in
            failures.add(s.payload(as: HandlerFailure.self)!.event)
            return nil
        }
        try c.on("bad") { _ in throw Boom() }
        try c.on("good") { _ in "fine" }
        await #expect(throws: Boom.self) { try await c.dispatch("bad").value }
        #expect(try await c.dispatch("good").value.results.first as? String == "fine")
        #expect(failures.all == ["bad"])
    }

    @Test func stopOnErrorStopsAtTheFirstFailure() async throws {
        let c = try Controller(stopOnError: true)
        try c.on("bad") { _ in throw Boom() }
        try c.on("later") { _ in "ran" }
        let bad = c.dispatch("bad")
        let later = c.dispatch("later")
        await #expect(throws: Boom.self) { try await bad.value }
        await #expect { try await later.value } throws: { ($0 as? ControllerError)?.code == .shutDown }
        await c.stopped()
        await #expect { try await c.dispatch("later").value } throws: { ($0 as? ControllerError)?.code == .shutDown }
    }

    @Test func shutdownFinishesQueuedWorkThenRefuses() async throws {
        let c = try Controller()
        let ran = Atomic<Int>(0)
        try c.on("job") { _ in
            ran.add(1, ordering: .relaxed)
            return nil
        }
        for _ in 0..<100 { c.dispatch("job") }
        c.shutdown()
        await c.stopped()
        #expect(ran.load(ordering: .relaxed) == 100)
        await #expect { try await c.dispatch("job").value } throws: {
            let e = $0 as? ControllerError
            return e?.code == .shutDown && e!.message.contains("shut down")
        }
        try await onPlainThread { try c.wait() }  // returns: already stopped
    }

    @Test func lifecycleEventsCanBeObserved() async throws {
        let c = try Controller()
        let events = Log<String>()
        for name in [Controller.Lifecycle.active, Controller.Lifecycle.idle, Controller.Lifecycle.stopped] {
            try c.on(name) { s in
                events.add(s.event)
                return nil
            }
        }
        _ = try await c.dispatch("anything").value
        #expect(await eventually { events.all.contains(Controller.Lifecycle.idle) })
        c.shutdown()
        await c.stopped()
        let all = events.all
        #expect(all.first == Controller.Lifecycle.active)
        #expect(all.last == Controller.Lifecycle.stopped)
    }

    @Test func nextAwaitsTheNextOccurrence() async throws {
        let c = try Controller()
        defer { c.shutdown() }
        async let ready = c.next("ready", timeout: .seconds(20))
        // `next` waits from the moment it is registered, which the caller cannot observe: dispatch
        // until it has been seen rather than guessing how long registering takes.
        let dispatcher = Task {
            while !Task.isCancelled {
                c.dispatch("ready", "payload")
                try await Task.sleep(nanoseconds: 2_000_000)
            }
        }
        #expect(try await ready.payload(as: String.self) == "payload")
        dispatcher.cancel()
        await #expect { _ = try await c.next("never", timeout: .milliseconds(20)) } throws: {
            ($0 as? ControllerError)?.code == .timedOut
        }
    }

    @Test func timersRunOnTheControllerAndCanBeRetimedAndStopped() async throws {
        let c = try Controller()
        defer { c.shutdown() }
        let ticks = Atomic<Int>(0)
        let once = Atomic<Int>(0)
        let timer = c.every(.milliseconds(2)) { s in
            #expect(s.controller.loop.inEventLoop)
            ticks.add(1, ordering: .relaxed)
        }
        c.after(.milliseconds(5)) { _ in once.add(1, ordering: .relaxed) }
        #expect(await eventually { ticks.load(ordering: .relaxed) >= 3 })
        timer.setInterval(.milliseconds(1))
        let before = ticks.load(ordering: .relaxed)
        #expect(await eventually { ticks.load(ordering: .relaxed) >= before + 3 })
        timer.setInterval(nil)  // stops, like set_timing(None)
        try await Task.sleep(nanoseconds: 20_000_000)
        let stopped = ticks.load(ordering: .relaxed)
        try await Task.sleep(nanoseconds: 30_000_000)
        #expect(ticks.load(ordering: .relaxed) == stopped)
        #expect(once.load(ordering: .relaxed) == 1)
        // A stopped timer starts again with a new interval, as set_timing does.
        timer.setInterval(.milliseconds(2))
        #expect(await eventually { ticks.load(ordering: .relaxed) >= stopped + 3 })
        // Stopping and restarting at once leaves only the new timer (an hour): the 2 ms one is gone.
        timer.stop()
        timer.setInterval(.seconds(3600))
        try await Task.sleep(nanoseconds: 20_000_000)
        let restarted = ticks.load(ordering: .relaxed)
        try await Task.sleep(nanoseconds: 30_000_000)
        #expect(ticks.load(ordering: .relaxed) == restarted)
        timer.stop()
    }

    @Test func listenForwardsAllowedEventsWithPayloadAndContext() async throws {
        let a = try Controller(name: "a")
        let b = try Controller(name: "b")
        defer { a.shutdown(); b.shutdown() }
        let seenByB = Log<String>()
        try b.on("cpy") { s in
            seenByB.add("\(s.payload) \(s["a_ctx"] ?? "-")")
            return nil
        }
        try b.on("private") { _ in
            seenByB.add("private")
            return nil
        }
        b.listen(to: a, allow: ["cpy"])
        a.listen(to: b)  // a cycle: forwarded events are never forwarded again
        a.dispatch("cpy", "hhhh", context: ["a_ctx": "ok"])
        a.dispatch("private", 1)
        #expect(await eventually { seenByB.count >= 1 })
        try await Task.sleep(nanoseconds: 20_000_000)
        #expect(seenByB.all == ["hhhh ok"])
    }

    @Test func phasesRunInOrderEachFinishingFirst() async throws {
        let c = try Controller()
        defer { c.shutdown() }
        let order = Log<String>()
        try c.on("user_created", phase: .after) { _ in order.add("after"); return nil }
        try c.on("user_created", phase: .during) { (_: Session) async throws -> (any Sendable)? in
            try await Task.sleep(nanoseconds: 5_000_000)
            order.add("during (async)")
            return nil
        }
        try c.on("user_created", phase: .before) { _ in order.add("before"); return nil }
        _ = try await c.dispatch("user_created").value
        #expect(order.all == ["before", "during (async)", "after"])
    }

    @Test func matchSpecsTimesAndRemoval() async throws {
        let c = try Controller()
        defer { c.shutdown() }
        let calls = Log<String>()
        let admins = try c.on("user_created", match: ["role": "admin"]) { s in calls.add("admin:\(s.payload)"); return nil }
        try c.on("user_created", times: 2) { s in calls.add("twice:\(s.payload)"); return nil }
        for (user, role) in [("bob", "user"), ("susan", "admin"), ("eve", "user")] {
            _ = try await c.dispatch("user_created", user, context: ["role": role]).value
        }
        #expect(calls.all == ["twice:bob", "admin:susan", "twice:susan"])
        c.remove(admins)
        _ = try await c.dispatch("user_created", "zed", context: ["role": "admin"]).value
        #expect(calls.count == 3)
    }

    @Test func blueprintsInstallOnManyControllers() async throws {
        var blueprint = Blueprint()
        blueprint.on("one") { _ in 1 }
        blueprint.on("two") { _ in 2 }
        let c1 = try Controller(blueprints: [blueprint])
        let c2 = try Controller(blueprints: [blueprint])
        defer { c1.shutdown(); c2.shutdown() }
        #expect(try await c1.dispatch("two").value.results.first as? Int == 2)
        #expect(try await c2.dispatch("one").value.results.first as? Int == 1)
    }

    @Test func controllersCanShareOneLoop() async throws {
        let loop = try EventLoop.startThread(name: "shared")
        defer { loop.stopAndJoin() }
        let c1 = try Controller(loop: loop)
        let c2 = try Controller(loop: loop)
        defer { c1.shutdown(); c2.shutdown() }
        try c1.on("where") { s in s.controller.loop.inEventLoop }
        try c2.on("where") { s in s.controller.loop === c1.loop }
        #expect(try await c1.dispatch("where").value.results.first as? Bool == true)
        #expect(try await c2.dispatch("where").value.results.first as? Bool == true)
    }
}

@Suite struct SignalTests {
    final class Producer: Sendable {
        let produced = Signal<String>()
        func requestProduct() { produced.emit("some product") }
    }

    @Test func signalsReachControllersAndHandlersUntilDisconnected() async throws {
        let producer = Producer()
        let consumer = try Controller()
        defer { consumer.shutdown() }
        let got = Log<String>()
        try consumer.on("onProduced") { s in got.add("slot:\(s.payload)"); return nil }
        let slot = connect(producer.produced, to: consumer, as: "onProduced")
        let direct = connect(producer.produced) { got.add("direct:\($0)") }
        producer.requestProduct()
        #expect(await eventually { got.count == 2 })
        disconnect(slot)
        disconnect(direct)
        producer.requestProduct()
        try await Task.sleep(nanoseconds: 20_000_000)
        #expect(Set(got.all) == ["slot:some product", "direct:some product"])
        #expect(producer.produced.connectionCount == 0)
    }
}

@Suite struct ControllerPoolTests {
    @Test func poolSpreadsWorkAndReturnsResults() async throws {
        let pool = try ControllerPool(workers: 3)
        let threads = Log<String>()
        let results = try await withThrowingTaskGroup(of: Int.self) { group in
            for i in 0..<30 {
                group.addTask {
                    try await pool.submit { s in
                        threads.add(s.controller.name)
                        usleep(2_000)  // blocking work
                        return i * i
                    }.value
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(results.sorted() == (0..<30).map { $0 * $0 })
        #expect(Set(threads.all).count == 3)
        var blueprint = Blueprint()
        blueprint.on("fib") { s in fib(s.payload(as: Int.self)!) }
        try pool.install(blueprint)
        #expect(try await pool.dispatch("fib", 20).value.results.first as? Int == 6765)
        pool.shutdown()
        await pool.stopped()
    }

    func fib(_ n: Int) -> Int { n < 2 ? n : fib(n - 1) + fib(n - 2) }
}
