import EvbusController
import Testing

/// Declared phases and match keywords, context given at construction, pending() and idle().
@Suite struct VocabularyTests {
    func code(_ body: () throws -> Void) -> ControllerError.Code? {
        do { try body() } catch let e as ControllerError { return e.code } catch { return nil }
        return nil
    }

    @Test func phasesRunInTheOrderTheControllerWasGiven() async throws {
        let c = try Controller(phases: ["z", "a", "m", "b", "q"])
        defer { c.shutdown() }
        #expect(c.phases == ["z", "a", "m", "b", "q"])
        for phase in ["q", "b", "m", "a", "z"] {
            try c.on("e", phase: Phase(phase)) { _ in phase }
        }
        let results = try await c.dispatch("e").value.results.compactMap { $0 as? String }
        #expect(results == ["z", "a", "m", "b", "q"])
    }

    @Test func anUnknownPhaseIsRefusedWithTheKnownOnes() throws {
        let c = try Controller(phases: ["load", "save"])
        defer { c.shutdown() }
        do {
            try c.on("e", phase: .during) { _ in nil }
            Issue.record("a handler in an unknown phase was accepted")
        } catch {
            #expect(error.code == .unknownPhase)
            #expect(error.message.contains("'during'") && error.message.contains("load") && error.message.contains("save"))
        }
        var blueprint = Blueprint()
        blueprint.on("ok", phase: "load") { _ in nil }
        blueprint.on("bad", phase: "after") { _ in nil }
        #expect(code { try c.install(blueprint) } == .unknownPhase)
        #expect(code { _ = try Controller(blueprints: [blueprint]) } == .unknownPhase)
    }

    @Test func aPhaseListMustBeNonEmptyAndDistinct() {
        #expect(code { _ = try Controller(phases: []) } == .unknownPhase)
        #expect(code { _ = try Controller(phases: ["a", "b", "a"]) } == .unknownPhase)
    }

    @Test func aRefusedBlueprintInstallsNothing() async throws {
        let c = try Controller(keywords: ["role"])
        defer { c.shutdown() }
        var blueprint = Blueprint()
        blueprint.on("a") { _ in "a" }
        blueprint.on("b", match: ["colour": "red"]) { _ in "b" }
        #expect(code { try c.install(blueprint) } == .unknownKeyword)
        #expect(try await c.dispatch("a").value.handlersRun == 0)
    }

    @Test func declaredKeywordsRefuseOtherMatchSpecsAndDispatches() async throws {
        let c = try Controller(keywords: ["role"])
        defer { c.shutdown() }
        #expect(c.keywords == ["role"])
        #expect(code { try c.on("e", match: ["team": "x"]) { _ in nil } } == .unknownKeyword)
        try c.on("e", match: ["role": "admin"]) { _ in "admin" }
        #expect(try await c.dispatch("e", context: ["role": "admin"]).value.results.count == 1)
        do {
            _ = try await c.dispatch("e", context: ["role": "admin", "team": "x"]).value
            Issue.record("a dispatch with an undeclared keyword ran")
        } catch let error as ControllerError {
            #expect(error.code == .unknownKeyword && error.message.contains("'team'"))
        }
        // The library's own keys are always allowed.
        #expect(try await c.dispatch("e", context: ["role": "admin", "evbus.message": 1, "controller.forwardedFrom": "x"]).value.handlersRun == 1)
    }

    @Test func keywordsCanBeChangedLater() async throws {
        let c = try Controller()
        defer { c.shutdown() }
        try c.on("e", match: ["team": "x"]) { _ in "team" }
        c.allowKeywords(["role"])
        await #expect(throws: ControllerError.self) { try await c.dispatch("e", context: ["team": "x"]).value }
        c.allowKeywords(["role", "team"])
        #expect(try await c.dispatch("e", context: ["team": "x"]).value.handlersRun == 1)
        c.allowKeywords(nil)
        try c.on("e", match: ["anything": "1"]) { _ in nil }
        #expect(c.keywords == nil)
    }

    @Test func constructionContextIsVisibleInEverySessionAndDispatchValuesWin() async throws {
        let c = try Controller(context: ["db": "primary", "region": "eu"])
        defer { c.shutdown() }
        try c.on("q") { s in "\(s["db"]!) \(s["region"]!) \(s.controllerContext.count) \(s.context.count)" }
        #expect(try await c.dispatch("q").value.results.first as? String == "primary eu 2 0")
        #expect(try await c.dispatch("q", context: ["region": "us"]).value.results.first as? String == "primary us 2 1")
        #expect(try await c.submit { s in s["db"] as? String }.value == "primary")
    }

    @Test func pendingWaitsForAsyncWorkQueuedBeforeIt() async throws {
        let c = try Controller()
        defer { c.shutdown() }
        let done = Log<Int>()
        try c.on("slow") { (s: Session) async throws -> (any Sendable)? in
            try await Task.sleep(nanoseconds: 3_000_000)
            done.add(s.payload(as: Int.self)!)
            return nil
        }
        for i in 0..<5 { c.dispatch("slow", i) }
        try await c.pending().value
        #expect(done.all == [0, 1, 2, 3, 4])
    }

    @Test func pendingCanBeAwaitedFromAPlainThread() async throws {
        let c = try Controller()
        defer { c.shutdown() }
        let done = Log<Int>()
        try c.on("n") { s in done.add(s.payload(as: Int.self)!); return nil }
        let count = try await onPlainThread {
            for i in 0..<1000 { c.dispatch("n", i) }
            try c.pending().wait(timeout: .seconds(60))
            return done.count
        }
        #expect(count == 1000)
    }

    @Test func idleWaitsForFollowUpWork() async throws {
        let c = try Controller()
        defer { c.shutdown() }
        let depth = Log<Int>()
        try c.on("chain") { s in
            let n = s.payload(as: Int.self)!
            depth.add(n)
            if n < 50 { s.controller.dispatch("chain", n + 1) }
            return nil
        }
        c.dispatch("chain", 0)
        await c.idle()
        #expect(depth.all == Array(0...50))
    }

    @Test func pendingOnAControllerShuttingDownResolvesOnceItStopped() async throws {
        let c = try Controller()
        let ran = Log<Int>()
        try c.on("slow") { (_: Session) async throws -> (any Sendable)? in
            try await Task.sleep(nanoseconds: 5_000_000)
            ran.add(1)
            return nil
        }
        c.dispatch("slow")
        c.shutdown()
        try await c.pending().value
        #expect(ran.all == [1])
    }
}
