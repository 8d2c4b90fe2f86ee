import Evbus
import EvbusIO
import EvbusTestSupport
import EvbusWire
import Foundation
import Glibc
import Synchronization
import Testing

/// Control requests against a broker that stopped answering (SIGSTOP): they end at
/// `Options.controlTimeout` or when their task is cancelled, not when the broker comes back, and
/// what the broker does afterwards is kept or undone as docs/LIBRARY.md ("Timeouts and
/// cancellation") says.
@Suite struct ControlTimeoutTests {
    static func options(timeout: Duration = .milliseconds(300)) -> Peer.Options {
        var o = Peer.Options()
        o.controlTimeout = timeout
        o.reconnect = ReconnectPolicy(initialDelay: .milliseconds(20), maxDelay: .milliseconds(100))
        return o
    }

    /// Runs `body` in a task (cancelled at once if `cancel`) and says whether it ended while the
    /// broker was still stopped, then lets the broker go on.
    static func endsWhileStopped<T: Sendable>(
        _ broker: BrokerProcess, cancel: Bool = false, _ body: @escaping @Sendable () async throws -> T
    ) async -> (ended: Bool, error: (any Error)?) {
        let task = Task { try await body() }
        if cancel { task.cancel() }
        let whileStopped = await outcome(of: task)
        broker.process.signal(SIGCONT)
        if case .failure(let error) = await task.result { return (whileStopped != nil, error) }
        return (whileStopped != nil, nil)
    }

    static func code(_ error: (any Error)?) -> EvbusError.Code? { (error as? EvbusError)?.code }

    /// One control call of each kind the broker answers.
    enum Call: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case flush, brokerStats, topology, connections, declareQueue, declareExchange, bind, purge, deleteQueue
        var testDescription: String { rawValue }

        func make(_ peer: Peer) async throws {
            switch self {
            case .flush: try await peer.flush()
            case .brokerStats: _ = try await peer.brokerStats()
            case .topology: _ = try await peer.topology()
            case .connections: _ = try await peer.connections()
            case .declareQueue: _ = try await peer.declareQueue("asked")
            case .declareExchange: try await peer.declareExchange("ex", kind: .fanout)
            case .bind: try await peer.bind(queue: "there", exchange: "amq.topic", key: "k")
            case .purge: _ = try await peer.purgeQueue("there")
            case .deleteQueue: _ = try await peer.deleteQueue("there")
            }
        }
    }

    @Test(arguments: Call.allCases)
    func aControlCallTimesOutWhileTheBrokerIsStoppedAndThePeerCarriesOn(_ call: Call) async throws {
        let broker = try await BrokerProcess()
        let peer = try await Peer.connect(to: broker.socketPath, name: "asker", options: Self.options())
        _ = try await peer.declareQueue("there")
        try #require(await broker.process.stopAndWaitUntilStopped())
        let (ended, error) = await Self.endsWhileStopped(broker) { try await call.make(peer) }
        #expect(ended, "\(call) outlived its timeout")
        #expect(Self.code(error) == .timeout, "\(String(describing: error))")
        #expect("\(String(describing: error))".contains("did not answer"))
        // The broker is back (and may have done what was asked): the same connection answers again.
        try await peer.flush()
        #expect(try await peer.brokerStats().isEmpty == false)
        await peer.close()
    }

    @Test(arguments: Call.allCases)
    func aCancelledControlCallEndsWhileTheBrokerIsStopped(_ call: Call) async throws {
        let broker = try await BrokerProcess()
        let peer = try await Peer.connect(to: broker.socketPath, name: "asker", options: Self.options(timeout: .seconds(600)))
        _ = try await peer.declareQueue("there")
        try #require(await broker.process.stopAndWaitUntilStopped())
        let (ended, error) = await Self.endsWhileStopped(broker, cancel: true) { try await call.make(peer) }
        #expect(ended, "a cancelled \(call) waited for the broker")
        #expect(error is CancellationError, "\(String(describing: error))")
        try await peer.flush()
        await peer.close()
    }

    @Test func aCallInATaskCancelledBeforeItSendsNothing() async throws {
        let broker = try await BrokerProcess()
        let peer = try await Peer.connect(to: broker.socketPath, name: "asker")
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            _ = try await peer.declareQueue("never")
        }
        let result = await task.result
        #expect(throws: CancellationError.self) { try result.get() }
        try await peer.flush()
        #expect(try await peer.topology().queues.contains { $0.name == "never" } == false)
        await peer.close()
    }

    @Test func aDeclarationThatTimedOutIsRememberedAndMadeAgainAfterAReconnect() async throws {
        let path = TestPaths.socket("ct-replay")
        let first = try await BrokerProcess(socketPath: path)
        let reconnects = Atomic<Int>(0)
        var options = Self.options()
        options.onConnectionEvent = { if case .reconnected = $0 { reconnects.add(1, ordering: .relaxed) } }
        let peer = try await Peer.connect(to: path, name: "declarer", options: options)
        try #require(await first.process.stopAndWaitUntilStopped())
        let (ended, error) = await Self.endsWhileStopped(first) { try await peer.declareQueue("late") }
        #expect(ended && Self.code(error) == .timeout, "\(String(describing: error))")
        // The broker made it after all...
        #expect(try await eventually { try await peer.topology().queues.contains { $0.name == "late" } })
        // ...so a new broker (fresh data: the queue is not durable) gets it again from the peer.
        first.process.signal(SIGKILL)
        _ = await first.process.waitForExit()
        let second = try await BrokerProcess(socketPath: path)
        #expect(await eventually { reconnects.load(ordering: .relaxed) >= 1 })
        let observer = try await second.connect("observer")
        #expect(try await observer.topology().queues.contains { $0.name == "late" })
        await observer.close()
        await peer.close()
    }

    @Test func aSubscribeThatTimedOutIsUndoneAndDeliversNothing() async throws {
        let broker = try await BrokerProcess()
        let peer = try await Peer.connect(to: broker.socketPath, name: "subscriber", options: Self.options())
        let received = Collector<String>()
        try #require(await broker.process.stopAndWaitUntilStopped())
        let (ended, error) = await Self.endsWhileStopped(broker) {
            _ = try await peer.subscribe("news.*", "weather.#") { received.add("late: \($0.text)") }
        }
        #expect(ended && Self.code(error) == .timeout, "\(String(describing: error))")
        // The broker subscribed it once it ran again; the peer, whose caller never got the
        // subscription, takes both patterns back.
        #expect(try await eventually { try await Self.subscriptions(of: "subscriber", peer).isEmpty })
        _ = try await peer.subscribe("news.*") { received.add("kept: \($0.text)") }
        let publisher = try await broker.connect("publisher")
        try await publisher.publish("news.today", "hello")
        try await publisher.publish("weather.rain", "wet")
        try await publisher.flush()
        try await peer.flush()
        #expect(await eventually { received.items == ["kept: hello"] })
        try await peer.flush()
        #expect(received.items == ["kept: hello"])
        await publisher.close()
        await peer.close()
    }

    @Test func aConsumeThatTimedOutIsCancelledAndItsMessagesGoToTheNextConsumer() async throws {
        let broker = try await BrokerProcess()
        let peer = try await Peer.connect(to: broker.socketPath, name: "worker", options: Self.options())
        _ = try await peer.declareQueue("jobs")
        try await peer.publish(to: "", key: "jobs", "early")
        try #require(await broker.process.stopAndWaitUntilStopped())
        let (ended, error) = await Self.endsWhileStopped(broker) { _ = try await peer.consume("jobs", ack: .manual) }
        #expect(ended && Self.code(error) == .timeout, "\(String(describing: error))")
        // The consumer the broker made once it ran again is cancelled, and what it was sent
        // meanwhile goes back to the queue.
        #expect(try await eventually {
            try await peer.topology().queues.first { $0.name == "jobs" }.map { $0.consumers == 0 && $0.unacked == 0 } ?? false
        })
        let next = try await peer.consume("jobs", ack: .manual)
        try await peer.publish(to: "", key: "jobs", "later")
        let got = try await take(2, from: next)
        #expect(got.map(\.text) == ["early", "later"])
        for d in got { try d.ack() }
        await peer.close()
    }

    @Test func anUnsubscribeInACancelledTaskStillStopsTheSubscription() async throws {
        let broker = try await BrokerProcess()
        let peer = try await Peer.connect(to: broker.socketPath, name: "leaver")
        let subscription = try await peer.subscribe("topic")
        let consumer = try await peer.consume(try await peer.declareQueue("").name)
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            try? await peer.unsubscribe(subscription)
            try? await peer.cancel(consumer)
        }
        await task.value
        // Both iterations end, and the broker lets go of both.
        for try await _ in subscription { Issue.record("an event after unsubscribe") }
        for try await _ in consumer { Issue.record("a delivery after cancel") }
        #expect(try await eventually {
            let me = try await peer.connections().first { $0.name == "leaver" }
            return me.map { $0.subscriptions.isEmpty && $0.consumers.isEmpty } ?? false
        })
        await peer.close()
    }

    @Test func connectingToABrokerThatSendsNoWelcomeFailsAtTheHandshakeTimeout() async throws {
        let broker = try await BrokerProcess()
        try #require(await broker.process.stopAndWaitUntilStopped())
        var options = Peer.Options()
        options.handshakeTimeout = .milliseconds(300)
        let path = broker.socketPath
        // The kernel accepts the connection into the stopped broker's backlog; nothing answers.
        let connecting = Task { try await Peer.connect(to: path, name: "early", options: options) }
        let ended = await outcome(of: connecting)
        broker.process.signal(SIGCONT)
        guard case .failure(let error)? = ended else {
            Issue.record("connect did not end: \(String(describing: ended))")
            return
        }
        #expect(Self.code(error) == .cannotConnect, "\(error)")
        #expect("\(error)".contains("no WELCOME"))
    }

    @Test func aCancelledConnectEndsWhileTheBrokerSendsNoWelcome() async throws {
        let broker = try await BrokerProcess()
        try #require(await broker.process.stopAndWaitUntilStopped())
        var options = Peer.Options()
        options.handshakeTimeout = .seconds(600)
        let path = broker.socketPath, patient = options
        let connecting = Task { try await Peer.connect(to: path, name: "impatient", options: patient) }
        // Time to reach the handshake (a cancel before it is the other case, below); waiting
        // less only makes the test weaker, never wrong.
        try await Task.sleep(for: .milliseconds(300))
        connecting.cancel()
        let ended = await outcome(of: connecting) != nil
        broker.process.signal(SIGCONT)
        var error: (any Error)?
        if case .failure(let e) = await connecting.result { error = e }
        #expect(ended, "a cancelled connect waited for WELCOME")
        #expect(error is CancellationError, "\(String(describing: error))")
        // The broker, running again, sees that connection closed and no other.
        let observer = try await broker.connect("observer")
        #expect(try await eventually { try await observer.connections().allSatisfy { $0.name != "impatient" } })
        // A task cancelled before it connects does not connect at all.
        let early = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await Peer.connect(to: path, name: "never", options: patient)
        }
        let result = await early.result
        #expect(throws: CancellationError.self) { try result.get() }
        await observer.close()
    }

    @Test func reconnectingToABrokerThatSendsNoWelcomeKeepsTryingUntilOneDoes() async throws {
        let path = TestPaths.socket("ct-rehello")
        let first = try await BrokerProcess(socketPath: path)
        let events = Collector<ConnectionEvent>()
        var options = Self.options()
        options.handshakeTimeout = .milliseconds(200)
        options.onConnectionEvent = { events.add($0) }
        let peer = try await Peer.connect(to: path, name: "patient", options: options)
        let subscription = try await peer.subscribe("after")
        first.process.signal(SIGKILL)
        _ = await first.process.waitForExit()
        // Something that accepts connections (into its backlog) and never answers.
        unlink(path)
        let silent = try UnixSocket.listen(path: path, mode: 0o600)
        let attempts = { events.items.filter { if case .reconnecting = $0 { true } else { false } }.count }
        let before = attempts()
        // Each try connects, and is given up at the handshake timeout.
        #expect(await eventually { attempts() >= before + 3 }, "\(events.items)")
        #expect(!events.items.contains { if case .reconnected = $0 { true } else { false } })
        // A call meanwhile fails at once, with the latest reason, said once.
        do {
            try await peer.flush()
            Issue.record("flush succeeded while reconnecting")
        } catch let error as EvbusError {
            #expect(error.code == .connectionLost)
            #expect(error.message.contains("no WELCOME"), "\(error)")
            #expect(error.message.split(separator: "; reconnecting", omittingEmptySubsequences: false).count == 2, "\(error)")
        }
        close(silent)
        unlink(path)
        let second = try await BrokerProcess(socketPath: path)
        #expect(await eventually { events.items.contains { if case .reconnected = $0 { true } else { false } } }, "\(events.items)")
        let publisher = try await second.connect("publisher")
        try await publisher.publish("after", "back")
        #expect(try await take(1, from: subscription).map(\.text) == ["back"])
        await publisher.close()
        await peer.close()
    }

    /// Something on `path` that welcomes every connection and then answers nothing: a broker
    /// that wedged right after the handshake.
    final class WelcomeThenSilence: Sendable {
        let welcomed = Atomic<Int>(0)
        private let stopped = Atomic<Bool>(false)
        private let done = Atomic<Bool>(false)

        init(path: String) throws {
            unlink(path)
            let listener = try UnixSocket.listen(path: path, mode: 0o600)
            let welcome = Frame.welcome(version: WireFormat.version, maxFrame: 1 << 20, connectionID: 99, brokerName: "wedged").encoded()
            Thread.detachNewThread { [self] in
                var held: [Int32] = []
                while !stopped.load(ordering: .relaxed) {
                    var p = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
                    guard poll(&p, 1, 20) == 1, let fd = try? UnixSocket.accept(listener) else { continue }
                    _ = welcome.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                    held.append(fd)
                    welcomed.add(1, ordering: .relaxed)
                }
                for fd in held { close(fd) }
                close(listener)
                unlink(path)
                done.store(true, ordering: .releasing)
            }
        }

        func stop() async {
            stopped.store(true, ordering: .relaxed)
            _ = await eventually { done.load(ordering: .acquiring) }
        }
    }

    @Test func aBrokerThatWelcomesAndThenWedgesIsLeftAtTheControlTimeoutAndTriedAgain() async throws {
        let path = TestPaths.socket("ct-wedged")
        let first = try await BrokerProcess(socketPath: path)
        let events = Collector<ConnectionEvent>()
        var options = Self.options(timeout: .milliseconds(200))
        options.onConnectionEvent = { events.add($0) }
        let peer = try await Peer.connect(to: path, name: "restorer", options: options)
        let subscription = try await peer.subscribe("after")
        first.process.signal(SIGKILL)
        _ = await first.process.waitForExit()
        let wedged = try WelcomeThenSilence(path: path)
        // Welcomed, the peer restores its subscription; unanswered, it drops that connection
        // and tries again, again and again.
        #expect(await eventually { wedged.welcomed.load(ordering: .relaxed) >= 3 })
        #expect(!events.items.contains { if case .reconnected = $0 { true } else { false } })
        await wedged.stop()
        let second = try await BrokerProcess(socketPath: path)
        #expect(await eventually { events.items.contains { if case .reconnected = $0 { true } else { false } } }, "\(events.items)")
        let publisher = try await second.connect("publisher")
        try await publisher.publish("after", "back")
        #expect(try await take(1, from: subscription).map(\.text) == ["back"])
        await publisher.close()
        await peer.close()
    }

    /// Ways to stop reading a subscription or consumer nobody reads.
    enum Abandon: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case unsubscribe, cancelConsumer, dropConsumer
        var testDescription: String { rawValue }
    }

    @Test(arguments: Abandon.allCases)
    func aFullBufferGivenUpNoLongerHoldsTheConnection(_ abandon: Abandon) async throws {
        let broker = try await BrokerProcess()
        var options = Self.options(timeout: .seconds(60))
        options.subscriptionBuffer = 4
        let peer = try await Peer.connect(to: broker.socketPath, name: "full", options: options)
        let publisher = try await broker.connect("publisher")
        // More than the buffer holds: the peer stops reading until it has room.
        var subscription: Subscription?
        var consumer: Consumer?
        if abandon == .unsubscribe {
            subscription = try await peer.subscribe("flood")
            for i in 0..<32 { try await publisher.publish("flood", "\(i)") }
        } else {
            let queue = try await peer.declareQueue("").name
            consumer = try await peer.consume(queue, ack: .auto)
            for i in 0..<32 { try await publisher.publish(to: "", key: queue, "\(i)") }
        }
        try await publisher.flush()
        // Giving it up (nothing reads it) lets the peer read on: the answers come.
        switch abandon {
        case .unsubscribe: try await peer.unsubscribe(subscription!)
        case .cancelConsumer: try await peer.cancel(consumer!)
        case .dropConsumer: consumer = nil
        }
        let subscribing = Task { try await peer.subscribe("after") }
        guard case .success(let after)? = await outcome(of: subscribing) else {
            Issue.record("the peer stayed paused")
            return
        }
        try await publisher.publish("after", "read")
        #expect(try await take(1, from: after).map(\.text) == ["read"])
        _ = (subscription, consumer)
        await publisher.close()
        await peer.close()
    }

    static func subscriptions(of name: String, _ peer: Peer) async throws -> [String] {
        try await peer.connections().first { $0.name == name }?.subscriptions ?? ["(connection not listed)"]
    }
}
