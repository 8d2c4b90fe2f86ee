@testable import Evbus
import EvbusController
import EvbusTestSupport
import Foundation
import Synchronization
import Testing

/// Peers across a restart of the real `evbus broker` binary on the same socket and data
/// directory (docs/LIBRARY.md, "Reconnecting").
@Suite struct ReconnectTests {
    /// A broker that can be stopped and started again where it was.
    final class RestartableBroker: Sendable {
        let socketPath: String
        let dataDir: String
        private let current: Mutex<BrokerProcess?>

        init(_ label: String) async throws {
            socketPath = TestPaths.socket(label)
            dataDir = TestPaths.dataDirectory(label)
            current = Mutex(try await BrokerProcess(socketPath: socketPath, dataDir: dataDir))
        }

        /// SIGTERM (or `signal`) and wait for it to exit.
        func stop(_ signal: Int32 = SIGTERM) async {
            guard let broker = current.withLock({ p -> BrokerProcess? in defer { p = nil }; return p }) else { return }
            broker.process.signal(signal)
            await broker.process.waitForExit()
        }

        func start() async throws {
            let broker = try await BrokerProcess(socketPath: socketPath, dataDir: dataDir)
            current.withLock { $0 = broker }
        }

        var process: RunningProcess? { current.withLock { $0?.process } }

        func restart() async throws {
            await stop()
            try await start()
        }

        func connect(_ name: String, options: Peer.Options = Peer.Options()) async throws -> Peer {
            try await Peer.connect(to: socketPath, name: name, options: options)
        }
    }

    /// Every connection event of one peer, as its sequence and its callback saw them.
    final class EventLog: Sendable {
        let fromCallback = Collector<ConnectionEvent>()
        let fromSequence = Collector<ConnectionEvent>()
        let sequenceEnded = Atomic<Bool>(false)

        func options(_ policy: ReconnectPolicy = ReconnectLog.fast) -> Peer.Options {
            var o = Peer.Options()
            o.reconnect = policy
            o.onConnectionEvent = { [fromCallback] in fromCallback.add($0) }
            return o
        }

        func follow(_ peer: Peer) {
            let events = peer.connectionEvents()
            Task { [self] in
                for await e in events { fromSequence.add(e) }
                sequenceEnded.store(true, ordering: .releasing)
            }
        }

        func count(_ match: (ConnectionEvent) -> Bool) -> Int { fromCallback.items.filter(match).count }
        var reconnects: Int { count { if case .reconnected = $0 { true } else { false } } }
        var disconnects: Int { count { if case .disconnected = $0 { true } else { false } } }

        /// Waits until the peer has come back `n` times in all.
        func waitForReconnect(_ n: Int = 1) async -> Bool { await eventually(30) { reconnects >= n } }
    }

    enum ReconnectLog {
        /// Quick retries, so a test does not wait out the standard backoff.
        static let fast = ReconnectPolicy(initialDelay: .milliseconds(20), maxDelay: .milliseconds(200))
    }

    /// Starts `broker` again, waits until `producer` is back and has sent what it held, and
    /// reads `count` messages from queue "held" (failing, not hanging, if they do not come).
    static func restartAndReadHeld(_ broker: RestartableBroker, _ log: EventLog, _ producer: Peer, count: Int) async throws -> [String] {
        try await broker.start()
        #expect(await log.waitForReconnect())
        try await producer.flush()
        let reader = try await broker.connect("reader", options: log.options(.never))
        let got = try await reader.consume("held", ack: .auto)
        let texts = try await take(count, from: got).map(\.text)
        await reader.close()
        return texts
    }

    /// The broker's summary of `name`, as `peer` reads it (nil while it cannot).
    static func queue(_ name: String, seenBy peer: Peer) async -> QueueSummary? {
        try? await peer.topology().queues.first { $0.name == name }
    }

    static func isDisconnected(_ e: ConnectionEvent) -> Bool { if case .disconnected = e { true } else { false } }

    @Test func subscribersKeepTheirSequencesAndHandlersAcrossARestart() async throws {
        let broker = try await RestartableBroker("rc-sub")
        let log = EventLog()
        let publisherLog = EventLog()
        let listener = try await broker.connect("listener", options: log.options())
        log.follow(listener)
        let handled = Collector<String>()
        let iterated = try await listener.subscribe("iter.#")
        _ = try await listener.subscribe("hand.#") { handled.add($0.text) }
        let publisher = try await broker.connect("publisher", options: publisherLog.options())
        try await publisher.publish("iter.a", "before")
        try await publisher.publish("hand.a", "before")
        var events = iterated.makeAsyncIterator()
        #expect(try await events.next()?.text == "before")
        #expect(await eventually { handled.count == 1 })

        try await broker.restart()
        #expect(await log.waitForReconnect())
        #expect(await publisherLog.waitForReconnect())
        try await publisher.publish("iter.b", "after")
        try await publisher.publish("hand.b", "after")
        #expect(try await events.next()?.text == "after")  // the same sequence, no error in between
        #expect(await eventually { handled.count == 2 })
        #expect(handled.items == ["before", "after"])
        #expect(listener.inbox == "amq.inbox.\(listener.connectionID)")

        // The listener saw: disconnected, one or more tries, reconnected; its sequence saw the
        // same as its callback, in the same order.
        let seen = log.fromCallback.items
        #expect(await eventually { log.fromSequence.count == seen.count })
        #expect(log.fromSequence.items == seen)
        guard case .disconnected(let why) = seen.first else { Issue.record("first event: \(seen)"); return }
        #expect(why.code == .connectionLost)
        guard case .reconnected(let id) = seen.last else { Issue.record("last event: \(seen)"); return }
        #expect(id == listener.connectionID)
        let tries = seen.dropFirst().dropLast()
        #expect(!tries.isEmpty && tries.allSatisfy { if case .reconnecting = $0 { true } else { false } })

        await listener.close()
        #expect(await eventually { log.sequenceEnded.load(ordering: .acquiring) })
        await publisher.close()
        await broker.stop()
    }

    @Test func consumersComeBackWithTheirPrefetchAndDurableQueuesKeepTheirMessages() async throws {
        let broker = try await RestartableBroker("rc-consume")
        let log = EventLog()
        let asyncErrors = Collector<EvbusError>()
        var options = log.options()
        options.onAsyncError = { asyncErrors.add($0) }
        let worker = try await broker.connect("worker", options: options)
        _ = try await worker.declareQueue("jobs", QueueOptions(durable: true))
        for i in 1...4 { try await worker.publish(to: "", key: "jobs", "job \(i)", confirm: true, persistent: true) }
        try await worker.waitForConfirms()
        let consumer = try await worker.consume("jobs", ack: .manual, prefetch: 2)
        var deliveries = consumer.makeAsyncIterator()
        let first = try #require(try await deliveries.next())
        let second = try #require(try await deliveries.next())
        #expect([first.text, second.text] == ["job 1", "job 2"])  // the prefetch: nothing more comes

        try await broker.restart()
        #expect(await log.waitForReconnect())
        // Acks for deliveries of the old connection are dropped quietly (the broker requeued them).
        try first.ack()
        try second.ack()
        let again = [try #require(try await deliveries.next()), try #require(try await deliveries.next())]
        #expect(again.map(\.text) == ["job 1", "job 2"] && again.allSatisfy(\.redelivered))
        #expect(again[0].deliveryTag > second.deliveryTag)  // tags stay unique for the peer's life

        // The prefetch came back too: two unacked, the others wait.
        let probe = try await broker.connect("probe", options: log.options(.never))
        #expect(await eventually {
            let q = await Self.queue("jobs", seenBy: probe)
            return q?.unacked == 2 && q?.ready == 2 && q?.consumers == 1
        })
        for d in again { try d.ack() }
        #expect(try await deliveries.next()?.text == "job 3")
        #expect(try await deliveries.next()?.text == "job 4")
        try await worker.flush()
        #expect(asyncErrors.items.isEmpty, "\(asyncErrors.items)")
        await probe.close()
        await worker.close()
        await broker.stop()
    }

    @Test func aRequestInFlightFailsAtOnceAndTheResponderServesAgain() async throws {
        let broker = try await RestartableBroker("rc-rpc")
        let log = EventLog()
        let release = Atomic<Bool>(false)
        let server = try await broker.connect("server", options: log.options())
        let responder = try await server.respond(on: "svc", concurrency: 2) { (request: Request) async throws -> String in
            if request.text == "hold" { while !release.load(ordering: .acquiring) { try await Task.sleep(for: .milliseconds(5)) } }
            return "re: " + request.text
        }
        let caller = try await broker.connect("caller", options: log.options())
        #expect(try await caller.request(to: .queue("svc"), "one").text == "re: one")

        let inFlight = Task { try await caller.request(to: .queue("svc"), "hold", timeout: .seconds(600)) }
        #expect(await eventually { responder.handled == 1 && server.connectionID != 0 })
        #expect(await eventually {
            let q = await Self.queue("svc", seenBy: caller)
            return q?.unacked == 0 && q?.acked == 2  // the held request was accepted (acked at start)
        })
        await broker.stop()
        // connection-lost, not a ten-minute timeout.
        let outcome = await inFlight.result
        release.store(true, ordering: .releasing)
        guard case .failure(let error as EvbusError) = outcome else { Issue.record("\(outcome)"); return }
        #expect(error.code == .connectionLost)

        try await broker.start()
        #expect(await log.waitForReconnect(2))
        #expect(try await caller.request(to: .queue("svc"), "two").text == "re: two")
        await caller.close()
        await server.close()
        await broker.stop()
    }

    @Test func aCallerWithoutReconnectingFailsTooAndSaysDisconnected() async throws {
        let broker = try await RestartableBroker("rc-never")
        let log = EventLog()
        let server = try await broker.connect("server")
        _ = try await server.respond(on: "mute") { (_: Request) async throws -> String in
            try await Task.sleep(for: .seconds(600))
            return ""
        }
        let caller = try await broker.connect("caller", options: log.options(.never))
        log.follow(caller)
        let inFlight = Task { try await caller.request(to: .queue("mute"), "?", timeout: .seconds(600)) }
        #expect(await eventually {
            let q = await Self.queue("mute", seenBy: server)
            return q?.acked == 1
        })
        await broker.stop()
        let outcome = await inFlight.result
        guard case .failure(let error as EvbusError) = outcome else { Issue.record("\(outcome)"); return }
        #expect(error.code == .connectionLost)
        #expect(await eventually { log.sequenceEnded.load(ordering: .acquiring) })
        #expect(log.fromCallback.items.count == 1 && log.disconnects == 1)
        await #expect(throws: EvbusError.self) { try await caller.publish("x", "y") }
        await caller.close()
        await server.close()
    }

    @Test func publishesMadeWhileDisconnectedGoOutAfterTheQueuesAreBack() async throws {
        let broker = try await RestartableBroker("rc-buffer")
        let log = EventLog()
        let producer = try await broker.connect("producer", options: log.options())
        _ = try await producer.declareQueue("held")  // not durable: the restart loses it, the producer brings it back
        await broker.stop()
        #expect(await eventually { log.disconnects == 1 })
        for i in 1...3 { try await producer.publish(to: "", key: "held", "while down \(i)") }
        let texts = try await Self.restartAndReadHeld(broker, log, producer, count: 3)
        #expect(texts == (1...3).map { "while down \($0)" })
        await producer.close()
        await broker.stop()
    }

    @Test func aFullBufferFailsPublishesWhenToldTo() async throws {
        let broker = try await RestartableBroker("rc-full")
        let log = EventLog()
        var options = log.options(ReconnectPolicy(initialDelay: .seconds(10), whenBufferFull: .fail))
        options.outboxHighWatermark = 8 << 10
        options.outboxLowWatermark = 1 << 10
        let producer = try await broker.connect("producer", options: options)
        await broker.stop()
        #expect(await eventually { log.disconnects == 1 })
        let chunk = [UInt8](repeating: 7, count: 1000)
        var accepted = 0
        var refusal: EvbusError?
        while refusal == nil && accepted < 100 {
            do {
                try await producer.publish("bulk", chunk)
                accepted += 1
            } catch let e as EvbusError {
                refusal = e
            }
        }
        #expect(refusal?.code == .connectionLost)
        #expect((1...9).contains(accepted), "accepted \(accepted) before the buffer was full")
        await producer.close()
    }

    /// A publisher held while the broker is down (its buffer full) whose task is cancelled stops
    /// with `CancellationError` instead of waiting for the broker, as does a cancelled
    /// `waitForRoom()`; everything it had queued, the last publish included, goes out once the
    /// broker is back, in order.
    @Test func aPublisherHeldWhileDisconnectedStopsWhenCancelledAndItsMessagesGoOut() async throws {
        let broker = try await RestartableBroker("rc-cancel")
        let log = EventLog()
        var options = log.options()
        options.outboxHighWatermark = 8 << 10
        options.outboxLowWatermark = 1 << 10
        let producer = try await broker.connect("producer", options: options)
        _ = try await producer.declareQueue("held")  // not durable: the producer brings it back
        await broker.stop()
        #expect(await eventually { log.disconnects == 1 })
        let called = Atomic<Int>(0)
        let publishing = Task {
            while true {
                let i = called.add(1, ordering: .relaxed).newValue
                try await producer.publish(to: "", key: "held", Array("m\(i) ".utf8) + [UInt8](repeating: 46, count: 1000))
            }
        }
        #expect(await eventually { called.load(ordering: .relaxed) >= 2 })
        publishing.cancel()
        let result = try #require(await outcome(of: publishing), "the cancelled publisher still waits for the broker")
        #expect(throws: CancellationError.self) { try result.get() }
        let queued = called.load(ordering: .relaxed)
        #expect((2...20).contains(queued), "\(queued) publishes before it had to wait")
        // `waitForRoom()` ends the same way (nothing drains while disconnected: it must wait).
        let waiting = Task { try await producer.waitForRoom() }
        waiting.cancel()
        let waitResult = try #require(await outcome(of: waiting), "a cancelled waitForRoom still waits")
        #expect(throws: CancellationError.self) { try waitResult.get() }
        let texts = try await Self.restartAndReadHeld(broker, log, producer, count: queued)
        for (i, text) in zip(1..., texts) { #expect(text.hasPrefix("m\(i) "), "message \(i)") }
        await producer.close()
        await broker.stop()
    }

    @Test func confirmsInFlightAtTheDropAreReportedUnconfirmed() async throws {
        let broker = try await RestartableBroker("rc-confirm")
        let log = EventLog()
        let producer = try await broker.connect("producer", options: log.options())
        _ = try await producer.declareQueue("q")
        try await producer.publish(to: "", key: "q", "confirmed", confirm: true)
        try await producer.waitForConfirms()
        let process = try #require(broker.process)
        #expect(await process.stopAndWaitUntilStopped())  // it reads nothing more, confirms nothing more
        for i in 0..<3 { try await producer.publish(to: "", key: "q", "in doubt \(i)", confirm: true) }
        #expect(await eventually { producer.outbox.confirmsNotTaken == 0 })  // on the wire, not in the buffer
        let waiting = Task { try await producer.waitForConfirms(timeout: .seconds(600)) }
        process.signal(SIGKILL)
        await broker.stop()
        let outcome = await waiting.result
        guard case .failure(let error as EvbusError) = outcome else { Issue.record("confirmed? \(outcome)"); return }
        #expect(error.code == .connectionLost)
        #expect(error.message.contains("dropped before the broker confirmed"), "\(error.message)")
        // Publishes after the reconnect are confirmed as usual.
        try await broker.start()
        #expect(await log.waitForReconnect())
        try await producer.publish(to: "", key: "q", "after", confirm: true)
        try await producer.waitForConfirms()
        await producer.close()
        await broker.stop()
    }

    @Test func aPeerGivesUpAfterItsLimitAndEverythingEnds() async throws {
        let broker = try await RestartableBroker("rc-giveup")
        let log = EventLog()
        let peer = try await broker.connect("quitter", options: log.options(ReconnectPolicy(
            initialDelay: .milliseconds(20), maxDelay: .milliseconds(50), giveUpAfter: .milliseconds(300))))
        log.follow(peer)
        let subscription = try await peer.subscribe("t.#")
        let ended = Task { () -> EvbusError? in
            do {
                for try await _ in subscription {}
                return nil
            } catch {
                return error as? EvbusError ?? EvbusError(.closed, "not an EvbusError: \(error)")
            }
        }
        await broker.stop()
        let error = await ended.value
        #expect(error?.code == .connectionLost)
        #expect(error?.message.contains("gave up reconnecting") == true, "\(String(describing: error))")
        #expect(await eventually { log.sequenceEnded.load(ordering: .acquiring) })
        let events = log.fromSequence.items
        #expect(events.first.map(Self.isDisconnected) == true)
        if case .gaveUp = events.last {} else { Issue.record("last event \(String(describing: events.last))") }
        #expect(events.count >= 4)  // disconnected, at least two tries in 300 ms, gave up
        await #expect(throws: EvbusError.self) { try await peer.publish("t.x", "late") }
        await peer.close()
    }

    @Test func closeWhileDisconnectedEndsAtOnce() async throws {
        let broker = try await RestartableBroker("rc-close")
        let log = EventLog()
        let peer = try await broker.connect("closer", options: log.options(ReconnectPolicy(initialDelay: .seconds(30))))
        log.follow(peer)
        let subscription = try await peer.subscribe("t.#")
        let ended = Task { () -> Bool in
            do {
                for try await _ in subscription {}
                return true
            } catch {
                return false
            }
        }
        await broker.stop()
        #expect(await eventually { log.disconnects == 1 })
        await peer.close()
        #expect(await ended.value)  // a deliberate close ends iteration without an error
        #expect(await eventually { log.sequenceEnded.load(ordering: .acquiring) })
        let thrown = await #expect(throws: EvbusError.self) { try await peer.publish("t.x", "late") }
        #expect(thrown?.code == .closed)
    }

    @Test func aBrokerNamedQueueGetsANewNameAndKeepsItsBindings() async throws {
        let broker = try await RestartableBroker("rc-named")
        let log = EventLog()
        let listener = try await broker.connect("listener", options: log.options())
        try await listener.declareExchange("logs", kind: .fanout)
        let mine = try await listener.declareQueue("", QueueOptions(exclusive: true))
        try await listener.bind(queue: mine.name, exchange: "logs")
        let consumer = try await listener.consume(mine.name, ack: .auto)
        var it = consumer.makeAsyncIterator()
        let emitter = try await broker.connect("emitter", options: log.options())
        try await emitter.publish(to: "logs", key: "", "first")
        #expect(try await it.next()?.text == "first")

        try await broker.restart()
        #expect(await log.waitForReconnect(2))
        try await emitter.publish(to: "logs", key: "", "second")
        let next = try #require(try await it.next())
        #expect(next.text == "second")
        let queues = try await emitter.topology().queues
        #expect(queues.count == 1 && queues[0].exclusive && queues[0].consumers == 1)
        await emitter.close()
        await listener.close()
        await broker.stop()
    }

    @Test func controllerFeedsAndExposedControllersWorkAgainAfterARestart() async throws {
        let broker = try await RestartableBroker("rc-controller")
        let log = EventLog()
        let server = try await broker.connect("controller-process", options: log.options())
        let client = try await broker.connect("ui-process", options: log.options())
        let controller = try Controller(name: "worker")
        defer { controller.shutdown() }
        let fed = Collector<String>()
        try controller.on("sensors.hall") { s in
            fed.add(s.bus!.text)
            return nil
        }
        try controller.on("upper") { s in String(decoding: s.payload(as: [UInt8].self)!, as: UTF8.self).uppercased() }
        _ = try await server.feed(controller, "sensors.#")
        _ = try await server.expose(controller, as: "worker")
        try await client.publish("sensors.hall", "19")
        #expect(await eventually { fed.count == 1 })
        #expect(try await client.dispatch(to: "worker", "upper", Array("a".utf8)) == [Array("A".utf8)])

        try await broker.restart()
        #expect(await log.waitForReconnect(2))
        try await client.publish("sensors.hall", "20")
        #expect(await eventually { fed.count == 2 })
        #expect(fed.items == ["19", "20"])
        #expect(try await client.dispatch(to: "worker", "upper", Array("b".utf8)) == [Array("B".utf8)])
        await client.close()
        await server.close()
        await broker.stop()
    }

    // MARK: The CLI's long-running commands

    @Test func evbusSubCarriesOnAcrossARestartAndSaysSo() async throws {
        let broker = try await RestartableBroker("rc-cli-sub")
        let sub = try RunningProcess.evbus(["sub", "news.#", "--count", "2", "--socket", broker.socketPath])
        let probe = try await broker.connect("probe", options: EventLog().options())
        #expect(await eventually { (try? await probe.brokerStats().first { $0.name == "subscriptions" }?.value) == 1 })
        try await probe.publish("news.a", "before")
        #expect(await eventually { sub.stdoutLines == ["news.a\tbefore"] })

        try await broker.restart()
        #expect(await eventually { sub.stderr.contains("evbus sub: reconnected to the broker as connection") })
        #expect(sub.stderr.contains("evbus sub: disconnected from the broker ("), "\(sub.stderr)")
        #expect(await eventually { (try? await probe.brokerStats().first { $0.name == "subscriptions" }?.value) == 1 })
        try await probe.publish("news.b", "after")
        #expect(await sub.waitForExit() == 0)
        #expect(sub.stdoutLines == ["news.a\tbefore", "news.b\tafter"])
        await probe.close()
        await broker.stop()
    }

    @Test func noReconnectMakesSubConsumeAndRespondExitWithAnError() async throws {
        let broker = try await RestartableBroker("rc-cli-never")
        let socket = broker.socketPath
        let sub = try RunningProcess.evbus(["sub", "news.#", "--no-reconnect", "--socket", socket])
        let consume = try RunningProcess.evbus(["consume", "--exchange", "amq.topic", "--key", "#", "--no-reconnect", "--socket", socket])
        let respond = try RunningProcess.evbus(["respond", "svc", "--exec", "cat", "--no-reconnect", "--socket", socket])
        let probe = try await broker.connect("probe", options: EventLog().options(.never))
        #expect(await eventually {
            let queues = (try? await probe.topology().queues) ?? []
            let subscriptions = try? await probe.brokerStats().first { $0.name == "subscriptions" }?.value
            return queues.filter { $0.consumers == 1 }.count == 2 && subscriptions == 1
        })
        await probe.close()
        await broker.stop()
        for (name, process) in [("sub", sub), ("consume", consume), ("respond", respond)] {
            #expect(await process.waitForExit() == 1, "\(name): \(process.stderr)")
            #expect(process.stderr.contains("evbus \(name): disconnected from the broker ("), "\(name): \(process.stderr)")
            #expect(!process.stderr.contains("reconnecting"), "\(name): \(process.stderr)")
        }
    }

    @Test func evbusConsumeAndRespondServeAgainAfterARestart() async throws {
        let broker = try await RestartableBroker("rc-cli-serve")
        let socket = broker.socketPath
        let respond = try RunningProcess.evbus(["respond", "upper", "--exec", "tr a-z A-Z", "--socket", socket])
        let consume = try RunningProcess.evbus(["consume", "--exchange", "amq.topic", "--key", "alerts.#", "--socket", socket])
        let caller = try await broker.connect("caller", options: EventLog().options())
        let ready = {
            await eventually {
                let queues = (try? await caller.topology().queues) ?? []
                return queues.filter { $0.consumers == 1 }.count == 2
            }
        }
        #expect(await ready())
        #expect(try await caller.request(to: .queue("upper"), "hi").text == "HI")
        try await caller.publish(to: "amq.topic", key: "alerts.disk", "full")
        #expect(await eventually { consume.stdoutLines == ["alerts.disk\tfull"] })

        try await broker.restart()
        #expect(await ready())
        #expect(try await caller.request(to: .queue("upper"), "again").text == "AGAIN")
        try await caller.publish(to: "amq.topic", key: "alerts.cpu", "hot")
        #expect(await eventually { consume.stdoutLines == ["alerts.disk\tfull", "alerts.cpu\thot"] })
        for p in [respond, consume] {
            #expect(p.stderr.contains("reconnected to the broker"), "\(p.stderr)")
            p.signal(SIGTERM)
            await p.waitForExit()
        }
        await caller.close()
        await broker.stop()
    }
}
