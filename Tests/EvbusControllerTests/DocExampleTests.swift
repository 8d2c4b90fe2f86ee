// Generated from the examples in docs/CONTROLLER.md: each runs as a test, and
// DocSyncTests checks that the doc's code blocks still appear here verbatim.

import EvbusController
import Testing

@Suite struct DocExampleTests {
    /// A controller and its handlers
    @Test func aControllerAndItsHandlers() async throws {
        let controller = try Controller(name: "greeter")
        try controller.on("greet") { session in "hello, \(session.payload)" }
        let result = try await controller.dispatch("greet", "Ada").value
        #expect(result.results.first as? String == "hello, Ada")
        controller.shutdown()
    }

    /// Mappings given at construction: blueprints
    @Test func mappingsGivenAtConstructionBlueprints() async throws {
        var blueprint = Blueprint()
        blueprint.on("one") { _ in 1 }
        blueprint.on("two") { _ in 2 }
        let first = try Controller(name: "first", blueprints: [blueprint])
        let second = try Controller(name: "second", blueprints: [blueprint])
        #expect(try await first.dispatch("two").value.results.first as? Int == 2)
        #expect(try await second.dispatch("one").value.results.first as? Int == 1)
        first.shutdown()
        second.shutdown()
    }

    /// Submitting work, and waiting from non-async code
    @Test func submittingWorkAndWaitingFromNonAsyncCode() async throws {
        let controller = try Controller()
        let sum = controller.submit { _ in (1...10).reduce(0, +) }
        #expect(try await sum.value == 55)
        let refused = try await controller.submit { session -> String in
            do {
                _ = try session.controller.submit { _ in 0 }.wait(timeout: .seconds(1))
                return "waited"
            } catch let error as ControllerError {
                return error.code.description
            }
        }.value
        #expect(refused == "would-deadlock")
        controller.shutdown()
    }

    /// What a handler sees: the session
    @Test func whatAHandlerSeesTheSession() async throws {
        let controller = try Controller()
        try controller.on("login") { session in
            let user = session.payload(as: String.self) ?? "?"
            let role = session["role"] as? String ?? "?"
            #expect(session.event == "login")
            #expect(session.startedAt >= session.dispatchedAt)
            return "\(user) as \(role), queued for \(session.queuedFor)"
        }
        let result = try await controller.dispatch("login", "bob", context: ["role": "admin"]).value
        #expect((result.results.first as? String)?.hasPrefix("bob as admin") == true)
        controller.shutdown()
    }

    /// Async handlers keep strict FIFO order
    @Test func asyncHandlersKeepStrictFifoOrder() async throws {
        let controller = try Controller()
        let log = Log<String>()
        try controller.on("download") { (session: Session) async throws -> (any Sendable)? in
            log.add("download started")
            try await Task.sleep(nanoseconds: 10_000_000)
            log.add("download finished")
            return nil
        }
        try controller.on("show") { _ in log.add("show"); return nil }
        controller.dispatch("download")
        _ = try await controller.dispatch("show").value
        #expect(log.all == ["download started", "download finished", "show"])
        controller.shutdown()
    }

    /// Lifecycle events and the exception policy
    @Test func lifecycleEventsAndTheExceptionPolicy() async throws {
        let controller = try Controller()
        let failures = Log<String>()
        try controller.on(Controller.Lifecycle.exception) { session in
            failures.add(session.payload(as: HandlerFailure.self)!.event)
            return nil
        }
        try controller.on("parse") { _ in throw CocoaLikeError.badInput }
        await #expect(throws: CocoaLikeError.self) { try await controller.dispatch("parse").value }
        #expect(failures.all == ["parse"])

        let strict = try Controller(stopOnError: true)
        try strict.on("parse") { _ in throw CocoaLikeError.badInput }
        _ = try? await strict.dispatch("parse").value
        await strict.stopped()
        controller.shutdown()
    }

    /// Shutting down
    @Test func shuttingDown() async throws {
        let controller = try Controller()
        let done = Log<Int>()
        try controller.on("job") { session in done.add(session.payload(as: Int.self)!); return nil }
        for i in 0..<3 { controller.dispatch("job", i) }
        controller.shutdown()
        await controller.stopped()
        #expect(done.all == [0, 1, 2])
        await #expect(throws: ControllerError.self) { try await controller.dispatch("job", 3).value }
    }

    /// Awaiting the next occurrence of an event
    @Test func awaitingTheNextOccurrenceOfAnEvent() async throws {
        let controller = try Controller()
        async let ready = controller.next("ready", timeout: .seconds(10))
        try await Task.sleep(nanoseconds: 10_000_000)
        controller.dispatch("ready", "camera 1")
        #expect(try await ready.payload(as: String.self) == "camera 1")
        controller.shutdown()
    }

    /// Timers
    @Test func timers() async throws {
        let controller = try Controller()
        let ticks = Log<Int>()
        let heartbeat = controller.every(.milliseconds(5)) { _ in ticks.add(1) }
        controller.after(.milliseconds(1)) { _ in ticks.add(0) }
        try await Task.sleep(nanoseconds: 50_000_000)
        heartbeat.setInterval(.milliseconds(20))
        heartbeat.setInterval(nil)
        #expect(ticks.all.contains(0) && ticks.count >= 2)
        controller.shutdown()
    }

    /// One controller listening to another
    @Test func oneControllerListeningToAnother() async throws {
        let source = try Controller(name: "source")
        let mirror = try Controller(name: "mirror")
        let copies = Log<String>()
        try mirror.on("cpy") { session in
            copies.add("\(session.payload) \(session["a_ctx"] ?? "")")
            return nil
        }
        mirror.listen(to: source, allow: ["cpy"])
        source.dispatch("cpy", "hhhh", context: ["a_ctx": "ok"])
        _ = try await mirror.submit { _ in }.value  // queued after the forwarded event, so it ran
        #expect(copies.all == ["hhhh ok"])
        source.shutdown()
        mirror.shutdown()
    }

    /// Phases, match specs, limited handlers and removal
    @Test func phasesMatchSpecsLimitedHandlersAndRemoval() async throws {
        let users = try Controller()
        let calls = Log<String>()
        try users.on("user_created", phase: .before) { _ in calls.add("validate"); return nil }
        try users.on("user_created", phase: .after) { _ in calls.add("audit"); return nil }
        let notifyAdmins = try users.on("user_created", match: ["role": "admin"]) { session in
            calls.add("notify \(session.payload)")
            return nil
        }
        try users.on("user_created", times: 1) { _ in calls.add("welcome banner"); return nil }
        _ = try await users.dispatch("user_created", "bob", context: ["role": "user"]).value
        _ = try await users.dispatch("user_created", "susan", context: ["role": "admin"]).value
        users.remove(notifyAdmins)
        _ = try await users.dispatch("user_created", "zed", context: ["role": "admin"]).value
        #expect(calls.all == ["validate", "welcome banner", "audit",
                              "validate", "notify susan", "audit",
                              "validate", "audit"])
        users.shutdown()
    }

    /// Signals and slots
    @Test func signalsAndSlots() async throws {
        final class Producer: Sendable {
            let produced = Signal<String>()
            func requestProduct() { produced.emit("some product") }
        }
        let producer = Producer()
        let consumer = try Controller(name: "consumer")
        let received = Log<String>()
        try consumer.on("onProduced") { session in received.add(session.payload(as: String.self)!); return nil }
        let link = connect(producer.produced, to: consumer, as: "onProduced")
        producer.requestProduct()
        _ = try await consumer.submit { _ in }.value  // queued after the slot's event, so it ran
        #expect(received.all == ["some product"])
        disconnect(link)
        #expect(producer.produced.connectionCount == 0)
        consumer.shutdown()
    }

    /// A pool of workers for blocking or heavy work
    @Test func aPoolOfWorkersForBlockingOrHeavyWork() async throws {
        let pool = try ControllerPool(name: "fib", workers: 2)
        @Sendable func fib(_ n: Int) -> Int { n < 2 ? n : fib(n - 1) + fib(n - 2) }
        async let a = pool.submit { _ in fib(25) }.value
        async let b = pool.submit { _ in fib(26) }.value
        #expect(try await a + b == 75025 + 121393)
        pool.shutdown()
        await pool.stopped()
    }

    /// Your own phases, and declared match keywords
    @Test func yourOwnPhasesAndDeclaredMatchKeywords() async throws {
        let orders = try Controller(name: "orders", phases: ["validate", "apply", "audit", "notify"], keywords: ["region"])
        let steps = Log<String>()
        try orders.on("placed", phase: "notify") { _ in steps.add("notify"); return nil }
        try orders.on("placed", phase: "validate") { _ in steps.add("validate"); return nil }
        try orders.on("placed", phase: "apply", match: ["region": "eu"]) { _ in steps.add("apply eu"); return nil }
        _ = try await orders.dispatch("placed", context: ["region": "eu"]).value
        #expect(steps.all == ["validate", "apply eu", "notify"])

        #expect(throws: ControllerError.self) { try orders.on("placed", phase: .during) { _ in nil } }
        #expect(throws: ControllerError.self) { try orders.on("placed", match: ["tier": "gold"]) { _ in nil } }
        await #expect(throws: ControllerError.self) { try await orders.dispatch("placed", context: ["tier": "gold"]).value }
        orders.allowKeywords(["region", "tier"])
        try orders.on("placed", phase: "audit", match: ["tier": "gold"]) { _ in steps.add("audit gold"); return nil }
        _ = try await orders.dispatch("placed", context: ["tier": "gold"]).value
        #expect(steps.all.suffix(3) == ["validate", "audit gold", "notify"])
        orders.shutdown()
    }

    /// Context given at construction
    @Test func contextGivenAtConstruction() async throws {
        let shop = try Controller(name: "shop", context: ["currency": "EUR", "store": "Lyon"])
        try shop.on("price") { session in "\(session.payload) \(session["currency"]!) at \(session["store"]!)" }
        #expect(try await shop.dispatch("price", 12).value.results.first as? String == "12 EUR at Lyon")
        #expect(try await shop.dispatch("price", 9, context: ["currency": "CHF"]).value.results.first as? String == "9 CHF at Lyon")
        shop.shutdown()
    }

    /// Waiting for everything outstanding
    @Test func waitingForEverythingOutstanding() async throws {
        let indexer = try Controller(name: "indexer")
        let indexed = Log<String>()
        try indexer.on("file") { (session: Session) async throws -> (any Sendable)? in
            try await Task.sleep(nanoseconds: 2_000_000)
            indexed.add("\(session.payload)")
            if session.payload(as: String.self) == "b" { session.controller.dispatch("file", "b.thumbnail") }
            return nil
        }
        for name in ["a", "b"] { indexer.dispatch("file", name) }
        try await indexer.pending().value
        #expect(indexed.all.prefix(2) == ["a", "b"])
        await indexer.idle()
        #expect(indexed.all == ["a", "b", "b.thumbnail"])
        indexer.shutdown()
    }

    /// Handler changes are ordered with dispatches
    @Test func handlerChangesAreOrderedWithDispatches() async throws {
        let counter = try Controller(name: "counter")
        let seen = Log<Int>()
        counter.submit { (_: Session) async in try? await Task.sleep(nanoseconds: 20_000_000) }  // busy while the changes queue
        let handler = try counter.on("count") { session in seen.add(session.payload(as: Int.self)!); return nil }
        counter.dispatch("count", 1)
        counter.remove(handler)
        counter.dispatch("count", 2)
        try counter.on(Controller.Lifecycle.started) { _ in seen.add(0); return nil }
        try await counter.pending().value
        #expect(seen.all == [1, 0])
        counter.shutdown()
    }
}

enum CocoaLikeError: Error { case badInput }
