import Evbus
import EvbusTestSupport
import Synchronization
import Testing

/// Every queue rule from docs/ROUTING.md, through a real broker on a real socket.
@Suite struct QueueRuleTests {
    @Test func unacknowledgedMessagesComeBackFlaggedWhenAConsumerCancels() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let peer = try await broker.connect()
        _ = try await peer.declareQueue("jobs")
        for i in 0..<5 { try await peer.publish(to: "", key: "jobs", "\(i)") }
        let first = try await peer.consume("jobs", ack: .manual, prefetch: 3)
        let held = try await take(3, from: first)
        #expect(held.map(\.text) == ["0", "1", "2"])
        try await first.cancel()
        let second = try await peer.consume("jobs", ack: .manual)
        let again = try await take(5, from: second)
        #expect(again.map(\.text) == ["0", "1", "2", "3", "4"])
        #expect(again.map(\.redelivered) == [true, true, true, false, false])
        // Acknowledged ones are never delivered again.
        for d in again { try d.ack() }
        try await peer.flush()
        #expect(try await peer.topology().queues.first { $0.name == "jobs" }?.acked == 5)
        await peer.close()
    }

    @Test func nackRequeuesOrDeadLettersAndRejectDiscards() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let peer = try await broker.connect()
        try await peer.declareExchange("dlx", kind: .fanout)
        _ = try await peer.declareQueue("dead")
        try await peer.bind(queue: "dead", exchange: "dlx")
        _ = try await peer.declareQueue("work", QueueOptions(deadLetterExchange: "dlx"))
        try await peer.publish(to: "", key: "work", "a")
        try await peer.publish(to: "", key: "work", "b")
        let consumer = try await peer.consume("work", ack: .manual, prefetch: 1)
        var it = consumer.makeAsyncIterator()
        let a = try #require(try await it.next())
        try a.nack(requeue: true)
        let aAgain = try #require(try await it.next())
        #expect(aAgain.text == "a" && aAgain.redelivered)
        try aAgain.reject()
        let b = try #require(try await it.next())
        try b.ack()
        let dead = try await take(1, from: try await peer.consume("dead", ack: .auto))
        #expect(dead[0].text == "a")
        #expect(dead[0].properties.headers["x-death-reason"] == "rejected")
        #expect(dead[0].properties.headers["x-death-queue"] == "work")
        #expect(dead[0].properties.headers["x-death-routing-key"] == "work")
        await peer.close()
    }

    @Test func exclusiveQueuesBelongToOneConnectionAndGoWithIt() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let (owner, other) = try await broker.connect("owner", "other")
        let q = try await owner.declareQueue("private", QueueOptions(exclusive: true))
        await #expect(throws: EvbusError.self) { _ = try await other.consume(q.name) }
        let refusal = await refusalCode { _ = try await other.consume(q.name) }
        #expect(refusal == .queueLocked)
        #expect(await refusalCode { try await other.bind(queue: q.name, exchange: "amq.topic", key: "x") } == .queueLocked)
        #expect(await refusalCode { try await other.purgeQueue(q.name) } == .queueLocked)
        // Others may still publish into it (that is how reply queues work).
        try await other.publish(to: "", key: q.name, "hi", confirm: true)
        try await other.waitForConfirms()
        await owner.close()
        #expect(await eventually { await refusalCode { _ = try await other.declareQueue("private", passive: true) } == .unknownQueue })
        await other.close()
    }

    @Test func autoDeleteQueuesGoWithTheirLastConsumer() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let peer = try await broker.connect()
        _ = try await peer.declareQueue("temp", QueueOptions(autoDelete: true))
        let a = try await peer.consume("temp")
        let b = try await peer.consume("temp")
        try await a.cancel()
        #expect(try await peer.declareQueue("temp", QueueOptions(autoDelete: true), passive: true).consumerCount == 1)
        try await b.cancel()
        #expect(await refusalCode { _ = try await peer.declareQueue("temp", passive: true) } == .unknownQueue)
        await peer.close()
    }

    @Test func dropHeadKeepsTheNewestAndDeadLettersTheRest() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let peer = try await broker.connect()
        try await peer.declareExchange("overflowed", kind: .fanout)
        _ = try await peer.declareQueue("dropped")
        try await peer.bind(queue: "dropped", exchange: "overflowed")
        _ = try await peer.declareQueue("latest", QueueOptions(maxLength: 3, overflow: .dropHead, deadLetterExchange: "overflowed"))
        for i in 1...5 { try await peer.publish(to: "", key: "latest", "\(i)") }
        try await peer.flush()
        #expect(try await take(3, from: try await peer.consume("latest", ack: .auto)).map(\.text) == ["3", "4", "5"])
        let dropped = try await take(2, from: try await peer.consume("dropped", ack: .auto))
        #expect(dropped.map(\.text) == ["1", "2"])
        #expect(dropped.allSatisfy { $0.properties.headers["x-death-reason"] == "maxlen" })
        await peer.close()
    }

    @Test func rejectPublishTellsThePublisher() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let errors = Collector<EvbusError>()
        var options = Peer.Options()
        options.onAsyncError = { errors.add($0) }
        let peer = try await Peer.connect(to: broker.socketPath, options: options)
        _ = try await peer.declareQueue("bounded", QueueOptions(maxBytes: 10, overflow: .rejectPublish))
        try await peer.publish(to: "", key: "bounded", "12345", confirm: true)
        try await peer.publish(to: "", key: "bounded", "67890", confirm: true)
        try await peer.waitForConfirms()
        try await peer.publish(to: "", key: "bounded", "x", confirm: true)
        await #expect(throws: EvbusError.self) { try await peer.waitForConfirms() }
        try await peer.publish(to: "", key: "bounded", "y")  // unconfirmed: reported asynchronously
        #expect(await eventually { errors.items.contains { $0.wireCode == .queueFull } })
        #expect(try await peer.purgeQueue("bounded") == 2)
        await peer.close()
    }

    @Test func messagesExpireIntoTheDeadLetterExchange() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let peer = try await broker.connect()
        try await peer.declareExchange("expired", kind: .direct)
        _ = try await peer.declareQueue("graveyard")
        try await peer.bind(queue: "graveyard", exchange: "expired", key: "late")
        _ = try await peer.declareQueue("short", QueueOptions(messageTTL: 30, deadLetterExchange: "expired", deadLetterRoutingKey: "late"))
        _ = try await peer.declareQueue("long", QueueOptions(deadLetterExchange: "expired", deadLetterRoutingKey: "late"))
        try await peer.publish(to: "", key: "short", "queue ttl")
        try await peer.publish(to: "", key: "long", "message ttl", properties: MessageProperties(expiration: 30))
        let dead = try await take(2, from: try await peer.consume("graveyard", ack: .auto))
        #expect(Set(dead.map(\.text)) == ["queue ttl", "message ttl"])
        #expect(dead.allSatisfy { $0.properties.headers["x-death-reason"] == "expired" && $0.routingKey == "late" })
        #expect(broker.stat("expired") == 2)
        await peer.close()
    }

    @Test func mandatoryPublishesThatReachNothingComeBack() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let returned = Collector<ReturnedMessage>()
        var options = Peer.Options()
        options.onReturn = { returned.add($0) }
        let peer = try await Peer.connect(to: broker.socketPath, options: options)
        try await peer.declareExchange("nowhere", kind: .direct)
        try await peer.publish(to: "nowhere", key: "k", "lost?", mandatory: true)
        try await peer.publish(to: "nowhere", key: "k", "not mandatory")
        #expect(await eventually { returned.count == 1 })
        #expect(returned.items[0].code == .unroutable && returned.items[0].payload == Array("lost?".utf8))
        await peer.close()
    }

    @Test func confirmsCoverEveryPublish() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let peer = try await broker.connect()
        _ = try await peer.declareQueue("confirmed")
        for i in 0..<1000 { try await peer.publish(to: "", key: "confirmed", "\(i)", confirm: true) }
        try await peer.waitForConfirms()
        #expect(try await peer.declareQueue("confirmed", passive: true).messageCount == 1000)
        // A publish to an exchange that does not exist is nacked, not lost silently.
        try await peer.publish(to: "missing", key: "k", "x", confirm: true)
        await #expect(throws: EvbusError.self) { try await peer.waitForConfirms() }
        await peer.close()
    }

    @Test func badAcksAreRefusedAndTheConnectionGoesOn() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let errors = Collector<EvbusError>()
        var options = Peer.Options()
        options.onAsyncError = { errors.add($0) }
        let peer = try await Peer.connect(to: broker.socketPath, options: options)
        _ = try await peer.declareQueue("q")
        try await peer.publish(to: "", key: "q", "m")
        let consumer = try await peer.consume("q", ack: .manual)
        let d = try await take(1, from: consumer)[0]
        try d.ack()
        try d.ack()  // already acknowledged
        try peer.ack(999)  // never issued
        #expect(await eventually { errors.count == 2 })
        #expect(errors.items.allSatisfy { $0.wireCode == .unknownDeliveryTag })
        try await peer.publish(to: "", key: "q", "still fine")
        #expect(try await take(1, from: consumer).map(\.text) == ["still fine"])
        await peer.close()
    }

    @Test func conflictingAndInvalidDeclarationsAreRefused() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let peer = try await broker.connect()
        try await peer.declareExchange("x", kind: .fanout)
        try await peer.declareExchange("x", kind: .fanout)  // same again: fine
        #expect(await refusalCode { try await peer.declareExchange("x", kind: .topic) } == .preconditionFailed)
        _ = try await peer.declareQueue("q", QueueOptions(maxLength: 10))
        #expect(await refusalCode { _ = try await peer.declareQueue("q", QueueOptions(maxLength: 20)) } == .preconditionFailed)
        #expect(await refusalCode { try await peer.declareExchange("amq.mine", kind: .direct) } == .accessRefused)
        #expect(await refusalCode { try await peer.declareExchange("bad name", kind: .direct) } == .invalidName)
        #expect(await refusalCode { try await peer.bind(queue: "q", exchange: "missing") } == .unknownExchange)
        #expect(await refusalCode { try await peer.bind(queue: "missing", exchange: "x") } == .unknownQueue)
        #expect(await refusalCode { try await peer.bind(queue: "q", exchange: "") } == .accessRefused)
        try await peer.declareExchange("t", kind: .topic)
        #expect(await refusalCode { try await peer.bind(queue: "q", exchange: "t", key: "a.#b") } == .invalidPattern)
        #expect(await refusalCode { _ = try await peer.consume("missing") } == .unknownQueue)
        #expect(await refusalCode { _ = try await peer.declareQueue("q2", QueueOptions(deadLetterExchange: "nope")) } == .unknownExchange)
        try await peer.bind(queue: "q", exchange: "x")
        #expect(await refusalCode { try await peer.deleteExchange("x", ifUnused: true) } == .preconditionFailed)
        #expect(await refusalCode { try await peer.deleteExchange("amq.topic") } == .accessRefused)
        try await peer.publish(to: "x", key: "", "m", confirm: true)
        try await peer.waitForConfirms()
        #expect(await refusalCode { try await peer.deleteQueue("q", ifEmpty: true) } == .preconditionFailed)
        #expect(try await peer.deleteQueue("q") == 1)
        try await peer.deleteExchange("x", ifUnused: true)
        await peer.close()
    }

    @Test func deletingAQueueCancelsItsConsumersElsewhere() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let admin = try await broker.connect()
        let worker = try await broker.connect()
        _ = try await admin.declareQueue("doomed")
        let consumer = try await worker.consume("doomed")
        try await admin.deleteQueue("doomed")
        do {
            for try await _ in consumer {}
            Issue.record("iteration should end with consumer-cancelled")
        } catch let error as EvbusError {
            #expect(error.code == .consumerCancelled)
        }
        await admin.close()
        await worker.close()
    }

    @Test func plainSubscriptionsAndQueuesShareTheDefaultTopicExchange() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let peer = try await broker.connect()
        let subscription = try await peer.subscribe("sensors.#")
        _ = try await peer.declareQueue("sensor-log")
        try await peer.bind(queue: "sensor-log", exchange: "amq.topic", key: "sensors.*.temp")
        try await peer.publish("sensors.kitchen.temp", "21")
        try await peer.publish(to: "amq.topic", key: "sensors.hall.temp", "19")
        #expect(try await take(2, from: subscription).map(\.text) == ["21", "19"])
        let logged = try await take(2, from: try await peer.consume("sensor-log", ack: .auto))
        #expect(logged.map(\.text) == ["21", "19"])
        #expect(logged.map(\.exchange) == ["amq.topic", "amq.topic"])
        let topology = try await peer.topology()
        #expect(topology.exchanges.first { $0.name == "amq.topic" }?.subscriptions == 1)
        #expect(topology.exchanges.first { $0.name == "amq.topic" }?.bindings == [.init(queue: "sensor-log", key: "sensors.*.temp")])
        await peer.close()
    }

    @Test func aFillingQueuePausesItsPublisherAndLosesNothing() async throws {
        let broker = try InProcessBroker { config in
            config.highWatermarkBytes = 8192
            config.lowWatermarkBytes = 2048
        }
        defer { broker.shutdown() }
        let (producer, worker) = try await broker.connect("producer", "worker")
        _ = try await producer.declareQueue("backlog")
        let payload = [UInt8](repeating: 7, count: 100)
        for _ in 0..<1000 { try await producer.publish(to: "", key: "backlog", payload) }
        // Far more than 8 KiB was sent: the broker stopped reading from the producer.
        #expect(await eventually { broker.stat("backpressure_pauses") >= 1 })
        let depth = try await worker.declareQueue("backlog", passive: true).messageCount
        #expect(depth < 1000)
        let got = Collector<Int>()
        _ = try await worker.consume("backlog", ack: .manual, prefetch: 50) { d in
            got.add(d.payload.count)
            try? d.ack()
        }
        #expect(await eventually { got.count == 1000 })
        try await producer.flush()
        await producer.close()
        await worker.close()
    }

    @Test func topologyReportsRatesPerSecond() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let peer = try await broker.connect()
        _ = try await peer.declareQueue("busy")
        _ = try await peer.consume("busy", ack: .manual) { try? $0.ack() }
        // Keep traffic flowing across at least one of the broker's one-second samples.
        let sender = Task {
            while !Task.isCancelled {
                for _ in 0..<100 { try await peer.publish(to: "", key: "busy", "tick") }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        #expect(try await eventually(10) {
            guard let q = try await peer.topology().queues.first(where: { $0.name == "busy" }) else { return false }
            return q.publishRate > 0 && q.deliverRate > 0 && q.ackRate > 0
        })
        sender.cancel()
        await peer.close()
    }

    @Test func queuesExchangesAndBindingsDeclaredInTheConfigExistAtStart() async throws {
        let broker = try InProcessBroker { config in
            config.exchanges = [DeclaredExchange(name: "events", type: .topic)]
            config.queues = [DeclaredQueue(name: "audit", options: QueueOptions(maxLength: 100))]
            config.bindings = [DeclaredBinding(queue: "audit", exchange: "events", key: "user.#")]
        }
        defer { broker.shutdown() }
        let peer = try await broker.connect()
        try await peer.declareExchange("events", kind: .topic, passive: true)
        try await peer.publish(to: "events", key: "user.login", "alice", confirm: true)
        try await peer.waitForConfirms()
        #expect(try await peer.declareQueue("audit", passive: true).messageCount == 1)
        await peer.close()
    }
}
