import EvbusBroker
import EvbusTestSupport
import EvbusWire
import Foundation
import Testing

/// The points PROTOCOL.md settles for a client written from it alone (issue 14 §3), each as the
/// broker does it.
@Suite struct ProtocolContractTests {
    func frames(_ b: MemoryBroker, _ s: ConnectionState) throws -> [Frame] {
        var out: [Frame] = []
        while let f = try b.nextFrame(for: s) { out.append(f) }
        return out
    }

    /// §4: a broker frame carrying a message is at most `max_frame + 2048` bytes, even a dead
    /// letter of a maximum-size message with 255-byte names all round.
    @Test func aDeadLetterOfTheLargestMessageStaysWithinTheDocumentedBound() throws {
        let maxFrame = BrokerConfig().maxFrameBytes
        let b = MemoryBroker()
        let admin = b.connect()
        let long = { (c: Character) in String(repeating: c, count: 255) }
        let dlx = long("x"), first = long("q"), second = long("r"), key = long("k")
        var options = QueueOptions()
        options.deadLetterExchange = dlx
        options.deadLetterRoutingKey = key
        b.send([
            .declareExchange(requestID: 1, name: dlx, kind: .direct),
            .declareQueue(requestID: 2, name: first, options: options),
            .declareQueue(requestID: 3, name: second),
            .bind(requestID: 4, queue: second, exchange: dlx, key: key),
            .consume(consumerID: 5, queue: first, flags: ConsumeFlag.manualAck, prefetch: 0),
            .consume(consumerID: 6, queue: second, flags: 0, prefetch: 0),
        ], from: admin)
        #expect(try frames(b, admin).count == 6)
        // The largest PUBLISH_TO a client may send into `first`: length = max_frame exactly.
        let properties = MessageProperties(headers: ["h": "v"])
        let empty = Frame.publishTo(flags: 0, exchange: "", routingKey: first, properties: properties, payload: []).encoded()
        let payload = [UInt8](repeating: 0x61, count: maxFrame - (empty.count - 4))
        let publish = Frame.publishTo(flags: 0, exchange: "", routingKey: first, properties: properties, payload: payload)
        #expect(publish.encoded().count - 4 == maxFrame)
        let producer = b.connect()
        b.send([publish], from: producer)
        guard case .message(5, let tag, _, _, _, _, _, _)? = try frames(b, admin).first else { return #expect(Bool(false)) }
        b.send([.nack(deliveryTag: tag, flags: 0)], from: admin)  // dead-lettered into `second`
        let dead = try frames(b, admin)
        guard case .message(6, _, _, _, _, _, let p, _)? = dead.first else { return #expect(Bool(false), "\(dead)") }
        #expect(p.headers["x-death-queue"] == first)
        let length = dead[0].encoded().count - 4
        #expect(length > maxFrame, "the dead letter is larger than what was published")
        #expect(length <= maxFrame + 2048, "PROTOCOL.md §4's bound: \(length - maxFrame) bytes over max_frame")
    }

    @Test func aPublishToAnInboxTopicIsRefusedNotLostSilently() throws {
        let b = MemoryBroker()
        let s = b.connect()
        b.send([.publish(topic: "amq.inbox.1", payload: [1])], from: s)
        guard case .error(.invalidTopic, 0, let message)? = try frames(b, s).first else { return #expect(Bool(false)) }
        #expect(message.contains("names an inbox"))
        #expect(b.stat("unroutable") == 0)
        // The way that works: the default exchange, the inbox name as key.
        b.send([.publishTo(flags: 0, exchange: "", routingKey: Inbox.name(connectionID: s.id), payload: [2])], from: s)
        #expect(try frames(b, s) == [.deliver(subscriptionID: 0, publisher: s.id, topic: Inbox.name(connectionID: s.id), payload: [2])])
    }

    @Test func aPublishToWithAKeyIsDeliveredUnderItsKeyAndBuiltInExchangesTakePublishes() throws {
        let b = MemoryBroker()
        let s = b.connect()
        b.send([.subscribe(subscriptionID: 1, pattern: "a.*"), .publishTo(flags: 0, exchange: "amq.topic", routingKey: "a.b", payload: [1])], from: s)
        #expect(try frames(b, s) == [.ok(requestID: 1), .deliver(subscriptionID: 1, publisher: s.id, topic: "a.b", payload: [1])])
    }

    @Test func correlationPropertiesDoNotMakeARequest() throws {
        let b = MemoryBroker()
        let s = b.connect()
        let props = MessageProperties(correlationID: "9", replyTo: Inbox.name(connectionID: s.id))
        b.send([.publish(topic: "nobody.listens", properties: props, payload: []),
                .publishTo(flags: 0, exchange: "amq.topic", routingKey: "nobody.either", properties: props, payload: [])], from: s)
        #expect(try frames(b, s).isEmpty, "no ROUTED: only flag 0x04 makes a request")
        #expect(b.stat("unroutable") == 2)
    }

    @Test func repliesAreDeliveredWhateverTheirHeaders() throws {
        let b = MemoryBroker()
        let caller = b.connect()
        let other = b.connect()
        let inbox = Inbox.name(connectionID: caller.id)
        for props in [MessageProperties.none, MessageProperties(correlationID: "unknown"), MessageProperties(headers: ["evbus-status": "ok"])] {
            b.send([.publishTo(flags: 0, exchange: "", routingKey: inbox, properties: props, payload: [3])], from: other)
        }
        #expect(try frames(b, caller).count == 3)
    }

    @Test func deletingAQueueCancelsTheDeletersOwnConsumerToo() throws {
        let b = MemoryBroker()
        let s = b.connect()
        b.send([.declareQueue(requestID: 1, name: "q"), .consume(consumerID: 2, queue: "q", flags: 0, prefetch: 0)], from: s)
        _ = try frames(b, s)
        b.send([.deleteQueue(requestID: 3, name: "q")], from: s)
        let got = try frames(b, s)
        #expect(got.first == .cancel(consumerID: 2), "\(got)")
        guard case .queueOK(3, _)? = got.last else { return #expect(Bool(false)) }
    }

    /// §4: frames pipelined right after HELLO, before WELCOME is read, are read under `max_frame`.
    @Test func framesPipelinedAfterHelloCountAsAfterTheHandshake() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let watcher = try RawClient.handshaken(broker.socketPath, name: "watcher")
        watcher.send(Frame.subscribe(subscriptionID: 1, pattern: "big").encoded())
        guard case .ok(1) = try watcher.readFrame() else { return #expect(Bool(false)) }
        let raw = try RawClient(socketPath: broker.socketPath)
        let big = [UInt8](repeating: 7, count: 10_000)  // over the 4096-byte handshake limit
        raw.send(WireFormat.preamble + Frame.hello(clientName: "eager").encoded() + Frame.publish(topic: "big", payload: big).encoded())
        guard case .welcome = try raw.readFrame() else { return #expect(Bool(false)) }
        guard case .deliver(1, _, "big", _, let payload) = try watcher.readFrame() else { return #expect(Bool(false)) }
        #expect(payload == big)
    }
}
