import Evbus
import EvbusIO
import EvbusTestSupport
import Foundation
import Synchronization
import Testing

/// Request/reply through a real broker: inboxes, correlation, and every way a call can fail.
@Suite struct RequestReplyTests {
    @Test func aRequestGetsItsReply() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let (server, client) = try await broker.connect("server", "client")
        _ = try await server.respond(on: "upper") { (request: Request) -> String in
            "\(request.text.uppercased())/\(request.headers["lang"] ?? "none")/\(request.replyTo ?? "none")"
        }
        let reply = try await client.request(to: .queue("upper"), "hello", headers: ["lang": "en", "b": "2"])
        #expect(reply.text == "HELLO/en/\(client.inbox)", "the request's headers and reply-to reach the responder")
        #expect(reply.headers["evbus-status"] == nil, "a success carries no status header")
        #expect(reply.publisher == server.connectionID)
        #expect(client.inbox == "amq.inbox.\(client.connectionID)")
        await client.close()
        await server.close()
    }

    @Test func aThousandConcurrentCallsFromOnePeerAreEachMatched() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let (server, client) = try await broker.connect("server", "client")
        _ = try await server.respond(on: "square", prefetch: 16) { (request: Request) -> String in
            let n = Int(request.text)!
            if n % 7 == 0 { try await Task.sleep(for: .milliseconds(1)) }  // finish out of order
            return String(n * n)
        }
        let results = try await withThrowingTaskGroup(of: (Int, String).self) { group in
            for i in 0..<1000 {
                group.addTask { (i, try await client.request(to: .queue("square"), String(i)).text) }
            }
            return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
        }
        #expect(results.count == 1000)
        #expect(results.allSatisfy { $0.value == String($0.key * $0.key) })
        await client.close()
        await server.close()
    }

    @Test func aRequestTheBrokerRefusesFailsWithItsReasonNotItsDeadline() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let (client, server) = try await broker.connect("client", "server")
        // A queue that refuses everything, with a responder on it (so the request reaches it).
        _ = try await server.declareQueue("full", QueueOptions(maxLength: 0, overflow: .rejectPublish))
        _ = try await server.respond(on: "full") { (r: Request) -> String in r.text }
        for (destination, code, text) in [
            (Destination.exchange("nosuchx", key: "k"), ErrorCode.unknownExchange, "no exchange named \"nosuchx\""),
            (Destination.queue("full"), ErrorCode.queueFull, "queue \"full\" is full"),
        ] {
            do {
                _ = try await client.request(to: destination, "x", timeout: .seconds(60))
                Issue.record("\(destination): answered")
            } catch let error as EvbusError {
                // A 60 s deadline: a timeout here would fail the code check, not just be slow.
                #expect(error.wireCode == code, "\(destination): \(error)")
                #expect("\(error)".contains(text), "\(error)")
            }
        }
        #expect(broker.stat("rejected_requests") == 2)
        #expect(broker.logLines.contains("refused request r"))
        // The peer goes on: a request that can be answered still is.
        _ = try await client.respond(on: "echo") { (r: Request) -> String in r.text }
        #expect(try await client.request(to: .queue("echo"), "still here").text == "still here")
        await client.close()
        await server.close()
    }

    @Test func noResponderIsAnsweredAtOnce() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let client = try await broker.connect()
        _ = try await client.declareQueue("nobody-home")
        let start = ContinuousClock.now
        let error = await callError { _ = try await client.request(to: .queue("nobody-home"), "x", timeout: .seconds(20)) }
        #expect(error?.code == .noResponder)
        #expect(ContinuousClock.now - start < .seconds(10), "answered by the broker, not by the timeout")
        #expect(await callError { _ = try await client.request(to: .queue("no-such-queue"), "x") }?.code == .noResponder)
        // Nothing was left behind in the queue.
        #expect(try await client.declareQueue("nobody-home", passive: true).messageCount == 0)
        await client.close()
    }

    @Test func aSlowResponderTimesOutAndItsLateReplyIsDiscarded() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let server = try await broker.connect()
        let client = try await broker.connect()
        let release = AsyncGate()
        _ = try await server.respond(on: "slow") { (_: Request) -> String in
            await release.wait()
            return "too late"
        }
        #expect(await callError { _ = try await client.request(to: .queue("slow"), "x", timeout: .milliseconds(100)) }?.code == .timeout)
        release.open()
        #expect(await eventually { await client.lateReplyCount() == 1 })
        // The next call is not confused by the late reply.
        #expect(try await client.request(to: .queue("slow"), "y").text == "too late")
        await client.close()
        await server.close()
    }

    /// Cancelling the calling task ends `request` and `requestAll` at once with
    /// `CancellationError`, long before their timeouts; the reply that comes later is dropped as
    /// late, and the peer's next calls are not confused by it. A task cancelled before it asks
    /// sends nothing.
    @Test func cancellingTheCallerEndsItsRequestAtOnce() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let server = try await broker.connect()
        let client = try await broker.connect()
        let release = AsyncGate()
        let started = Atomic<Int>(0)
        _ = try await server.respond(on: "held", prefetch: 4) { (request: Request) -> String in
            started.add(1, ordering: .relaxed)
            await release.wait()
            return "answer to \(request.text)"
        }
        try await client.declareExchange("everyone", kind: .fanout)
        try await client.bind(queue: "held", exchange: "everyone")
        let one = Task { try await client.request(to: .queue("held"), "one", timeout: .seconds(600)) }
        let all = Task { try await client.requestAll(to: "everyone", key: "", Array("all".utf8), within: .seconds(600)) }
        try #require(await eventually { started.load(ordering: .relaxed) == 2 })
        one.cancel()
        all.cancel()
        let oneResult = try #require(await outcome(of: one), "a cancelled request still waits for its reply")
        let allResult = try #require(await outcome(of: all), "a cancelled requestAll still waits for its replies")
        #expect(throws: CancellationError.self) { try oneResult.get() }
        #expect(throws: CancellationError.self) { try allResult.get() }

        let early = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await client.request(to: .queue("held"), "never sent", timeout: .seconds(600))
        }
        let earlyResult = await early.result
        #expect(throws: CancellationError.self) { try earlyResult.get() }

        release.open()
        #expect(await eventually { await client.lateReplyCount() == 2 }, "both replies arrive after their calls ended")
        #expect(try await client.request(to: .queue("held"), "next").text == "answer to next")
        #expect(started.load(ordering: .relaxed) == 3, "the request of the task cancelled before asking was never sent")
        await client.close()
        await server.close()
    }

    @Test func shorterTimeoutsExpireFirstWhateverTheOrder() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let server = try await broker.connect()
        let client = try await broker.connect()
        let release = AsyncGate()
        let longArrived = AsyncGate()
        _ = try await server.respond(on: "stuck", prefetch: 8) { (request: Request) -> String in
            if request.text == "long" { longArrived.open() }
            await release.wait()
            return "late"
        }
        // A long call first, then a short one: the short deadline is earlier than the armed one.
        let long = Task { try await client.request(to: .queue("stuck"), "long", timeout: .seconds(60)) }
        await longArrived.wait()  // the long call is in flight (its deadline armed) before the short one
        #expect(await callError { _ = try await client.request(to: .queue("stuck"), "short", timeout: .milliseconds(100)) }?.code == .timeout)
        release.open()
        #expect(try await long.value.text == "late")
        await client.close()
        await server.close()
    }

    @Test func aLongCallDoesNotLetFinishedCallsPileUpBehindIt() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let server = try await broker.connect()
        let client = try await broker.connect()
        let started = AsyncGate(), release = AsyncGate()
        _ = try await server.respond(on: "hang") { (_: Request) -> String in
            started.open()
            await release.wait()
            return "late"
        }
        _ = try await server.respond(on: "echo") { (request: Request) -> [UInt8] in request.payload }
        // A call with the earliest deadline stays in flight while thousands of later ones finish.
        let hung = Task { try await client.request(to: .queue("hang"), "x", timeout: .seconds(60)) }
        await started.wait()
        for i in 0..<3000 { _ = try await client.request(to: .queue("echo"), "\(i)", timeout: .seconds(120)) }
        #expect(await client.deadlineEntryCount() < 2000, "finished calls' deadlines are dropped even behind a pending one")
        release.open()
        #expect(try await hung.value.text == "late")
        await client.close()
        await server.close()
    }

    @Test func aHandlerErrorTravelsBack() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let server = try await broker.connect()
        let client = try await broker.connect()
        _ = try await server.respond(on: "picky") { (request: Request) -> String in
            guard request.text == "please" else { throw RemoteError("impolite", "say please") }
            return "ok"
        }
        let error = await callError { _ = try await client.request(to: .queue("picky"), "now") }
        #expect(error?.code == .remote && error?.remoteCode == "impolite" && error?.message == "say please")
        #expect(try await client.request(to: .queue("picky"), "please").text == "ok")
        await client.close()
        await server.close()
    }

    @Test func aResponderThatLeavesMidRequestFailsItsCallersFast() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let server = try await broker.connect()
        let client = try await broker.connect()
        let started = AsyncGate()
        _ = try await server.respond(on: "fragile") { (_: Request) -> String in
            started.open()
            try await Task.sleep(for: .seconds(60))
            return "never"
        }
        let call = Task { try await client.request(to: .queue("fragile"), "x", timeout: .seconds(30)) }
        await started.wait()
        let start = ContinuousClock.now
        await server.close()
        let error = await callError { _ = try await call.value }
        #expect(error?.code == .responderGone)
        #expect(ContinuousClock.now - start < .seconds(10))
        await client.close()
    }

    @Test func callsFailWithConnectionLostWhenTheBrokerStops() async throws {
        let broker = try InProcessBroker()
        let server = try await broker.connect()
        let client = try await broker.connect()
        let started = AsyncGate()
        _ = try await server.respond(on: "hang") { (_: Request) -> String in
            started.open()
            try await Task.sleep(for: .seconds(60))
            return ""
        }
        let call = Task { try await client.request(to: .queue("hang"), "x", timeout: .seconds(30)) }
        await started.wait()
        broker.shutdown()
        #expect(await callError { _ = try await call.value }?.code == .connectionLost)
    }

    @Test func scatterGatherEndsWhenEveryResponderAnswered() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let client = try await broker.connect()
        try await client.declareExchange("census", kind: .fanout)
        var servers: [Peer] = []
        for i in 0..<3 {
            let peer = try await broker.connect("node-\(i)")
            let q = try await peer.declareQueue("", QueueOptions(exclusive: true))
            try await peer.bind(queue: q.name, exchange: "census")
            _ = try await peer.respond(on: q.name) { (_: Request) -> String in "node-\(i)" }
            servers.append(peer)
        }
        let start = ContinuousClock.now
        let replies = try await client.requestAll(to: "census", key: "", Array("who?".utf8), within: .seconds(20))
        #expect(Set(replies.map(\.text)) == ["node-0", "node-1", "node-2"])
        #expect(ContinuousClock.now - start < .seconds(10), "ended when all three answered, not at the deadline")
        // With nobody bound, it ends at once.
        try await client.declareExchange("empty", kind: .fanout)
        #expect(await callError { _ = try await client.requestAll(to: "empty", key: "", [], within: .seconds(20)) }?.code == .noResponder)
        for p in servers { await p.close() }
        await client.close()
    }

    @Test func strayMessagesToAnInboxAreCountedAndNeverAnswerACall() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let server = try await broker.connect()
        let client = try await broker.connect()
        let stranger = try await broker.connect()
        let release = AsyncGate()
        _ = try await server.respond(on: "gated") { (request: Request) -> String in
            await release.wait()
            return "real " + request.text
        }
        let call = Task { try await client.request(to: .queue("gated"), "x").text }
        // While the call waits: a correlation id this peer never issues, a number it never issued,
        // and no correlation id at all. The first two count as late; the last cannot be matched.
        for id in ["not-ours", "r99999999"] {
            try await stranger.publish(to: "", key: client.inbox, "forged", properties: MessageProperties(correlationID: id))
        }
        try await stranger.publish(to: "", key: client.inbox, "no id")
        try await stranger.flush()
        #expect(await eventually { await client.lateReplyCount() == 2 })
        release.open()
        #expect(try await call.value == "real x")
        await stranger.close()
        await client.close()
        await server.close()
    }

    @Test func repliesToAnInboxReachOnlyItsPeer() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let returned = Collector<ReturnedMessage>()
        var options = Peer.Options()
        options.onReturn = { returned.add($0) }
        let a = try await Peer.connect(to: broker.socketPath, options: options)
        let b = try await broker.connect()
        // An inbox is not a queue: nobody can consume or bind it.
        #expect(await refusalCode { _ = try await b.consume(a.inbox) } == .unknownQueue)
        #expect(await refusalCode { try await b.bind(queue: a.inbox, exchange: "amq.fanout") } == .unknownQueue)
        // A reply to an inbox nobody has comes back when mandatory.
        try await a.publish(to: "", key: "amq.inbox.999999", "anyone?", mandatory: true)
        #expect(await eventually { returned.count == 1 })
        await a.close()
        await b.close()
    }
}

/// A one-shot gate: `wait` suspends until `open`.
final class AsyncGate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))
    func open() {
        let waiters = state.withLock { s in
            s.open = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume() }
    }
    func wait() async {
        await withCheckedContinuation { c in
            let now = state.withLock { s -> Bool in
                if s.open { return true }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }
}
