import Evbus
import EvbusTestSupport
import EvbusWire
import Foundation
import Testing

/// Every refusal the broker makes, through a real socket: the offender gets an ERROR frame naming
/// the problem, only its connection (or only its request) is affected, one line is logged, and a
/// bystander peer loses nothing.
@Suite struct ProtocolRefusalTests {
    /// Sends `bytes` on a fresh connection; expects ERROR(code) and then the broker closing it.
    func expectConnectionRefused(
        _ bytes: [UInt8], _ code: ErrorCode, mentioning text: String, configure: (inout BrokerConfig) -> Void = { _ in }
    ) async throws {
        let broker = try InProcessBroker(configure: configure)
        defer { broker.shutdown() }
        let bystander = try await Bystander(broker)
        let client = try RawClient(socketPath: broker.socketPath)
        client.send(bytes)
        let frames = client.readUntilClosed()
        guard case .error(let got, let requestID, let message)? = frames.last else {
            Issue.record("expected an ERROR frame, got \(frames)")
            return
        }
        #expect(got == code)
        #expect(requestID == 0)
        #expect(message.contains(text), "\(message)")
        #expect(try await bystander.stillWorks())
        #expect(await eventually { broker.stat("protocol_errors") == 1 })
        #expect(broker.logLines.contains(code.name))
    }

    var hello: [UInt8] { WireFormat.preamble + Frame.hello(clientName: "bad").encoded() }

    @Test func badMagic() async throws {
        try await expectConnectionRefused(Array("GET / HTTP/1.1\r\n\r\n".utf8), .badMagic, mentioning: "preamble")
    }

    @Test func unsupportedVersion() async throws {
        try await expectConnectionRefused(WireFormat.magic + [9, 0], .unsupportedVersion, mentioning: "version 9")
    }

    @Test func frameOverTheLimitIsRefusedFromItsLengthAlone() async throws {
        // Only a header announcing 2 GiB: the broker must answer without waiting for (or allocating) it.
        try await expectConnectionRefused(hello + [0, 0, 0, 0x80, 0x10], .frameTooLarge, mentioning: "exceeds the limit")
    }

    @Test func largeFrameBeforeTheHandshakeIsRefused() async throws {
        try await expectConnectionRefused(WireFormat.preamble + [0, 0x20, 0, 0, 0x01], .frameTooLarge, mentioning: "4096")
    }

    @Test func silentClientTimesOutInTheHandshake() async throws {
        // Half a preamble, then nothing. The limit applies to the bystander's handshake too, so it
        // must leave room for a loaded machine (50 ms once failed the bystander under a full test run).
        try await expectConnectionRefused(Array(WireFormat.magic.prefix(3)), .handshakeTimeout, mentioning: "no handshake",
                                          configure: { $0.handshakeTimeoutMillis = 1000 })
    }

    @Test func unknownFrameType() async throws {
        try await expectConnectionRefused(hello + [1, 0, 0, 0, 0x6E], .unknownFrameType, mentioning: "0x6e")
    }

    @Test func unknownFrameTypeBeforeHelloIsStillUnknownFrameType() async throws {
        try await expectConnectionRefused(WireFormat.preamble + [1, 0, 0, 0, 0x6E], .unknownFrameType, mentioning: "0x6e")
    }

    @Test func aHelloNameOver255BytesIsMalformed() async throws {
        // HELLO: u16 length 256, then 256 bytes of name.
        let body: [UInt8] = [0x00, 0x01] + [UInt8](repeating: UInt8(ascii: "n"), count: 256)
        let frame = withUnsafeBytes(of: UInt32(body.count + 1).littleEndian, Array.init) + [FrameType.hello.rawValue] + body
        try await expectConnectionRefused(WireFormat.preamble + frame, .malformedFrame, mentioning: "255")
    }

    @Test func truncatedField() async throws {
        // SUBSCRIBE: id, then a pattern length of 50 with only 1 byte present.
        try await expectConnectionRefused(hello + [8, 0, 0, 0, 0x11, 1, 0, 0, 0, 50, 0, 0x61], .malformedFrame, mentioning: "pattern")
    }

    @Test func aPropertiesFieldRunningPastTheBody() async throws {
        // PUBLISH "a" with property flags 0x01 (content type) and no room for its length.
        try await expectConnectionRefused(hello + [5, 0, 0, 0, 0x10, 1, 0, 0x61, 0x01], .malformedFrame, mentioning: "content type")
    }

    @Test func frameBeforeHello() async throws {
        try await expectConnectionRefused(WireFormat.preamble + Frame.publish(topic: "a", payload: []).encoded(), .unexpectedFrame, mentioning: "expected HELLO")
    }

    @Test func helloTwice() async throws {
        try await expectConnectionRefused(hello + Frame.hello(clientName: "again").encoded(), .unexpectedFrame, mentioning: "already")
    }

    @Test func brokerOnlyFrameFromAClient() async throws {
        try await expectConnectionRefused(hello + Frame.ok(requestID: 1).encoded(), .unexpectedFrame, mentioning: "sent by the broker")
    }

    // MARK: Request-level refusals: the connection stays open.

    /// Sends `frame` after the handshake; expects ERROR(code, requestID) and a connection that still works.
    func expectRequestRefused(_ frame: Frame, _ code: ErrorCode, requestID: UInt32, setup: [Frame] = [],
                              configure: (inout BrokerConfig) -> Void = { _ in }) async throws {
        let broker = try InProcessBroker(configure: configure)
        defer { broker.shutdown() }
        let bystander = try await Bystander(broker)
        let client = try RawClient.handshaken(broker.socketPath)
        for f in setup {
            client.send(f)
            _ = try client.readFrame()
        }
        client.send(frame)
        guard case .error(let got, let id, let message) = try client.readFrame() else {
            Issue.record("expected ERROR")
            return
        }
        #expect(got == code, "\(message)")
        #expect(id == requestID)
        // Still open and working: a PING gets its PONG.
        client.send(.ping(token: 77))
        #expect(try client.readFrame() == .pong(token: 77))
        #expect(try await bystander.stillWorks())
        #expect(broker.stat("rejected_requests") == 1)
        #expect(broker.stat("protocol_errors") == 0)
    }

    @Test func invalidTopicRefusesOnlyThatPublish() async throws {
        try await expectRequestRefused(.publish(topic: "a..b", payload: [1]), .invalidTopic, requestID: 0)
    }

    @Test func wildcardTopicRefusesOnlyThatPublish() async throws {
        try await expectRequestRefused(.publish(topic: "a.*", payload: [1]), .invalidTopic, requestID: 0)
    }

    @Test func invalidPattern() async throws {
        try await expectRequestRefused(.subscribe(subscriptionID: 5, pattern: "a.b#"), .invalidPattern, requestID: 5)
    }

    @Test func unknownSubscription() async throws {
        try await expectRequestRefused(.unsubscribe(subscriptionID: 12), .unknownSubscription, requestID: 12)
    }

    @Test func duplicateSubscriptionID() async throws {
        try await expectRequestRefused(
            .subscribe(subscriptionID: 3, pattern: "b"), .duplicateSubscription, requestID: 3,
            setup: [.subscribe(subscriptionID: 3, pattern: "a")])
    }

    @Test func tooManySubscriptions() async throws {
        try await expectRequestRefused(
            .subscribe(subscriptionID: 3, pattern: "c"), .tooManySubscriptions, requestID: 3,
            setup: [.subscribe(subscriptionID: 1, pattern: "a"), .subscribe(subscriptionID: 2, pattern: "b")],
            configure: { $0.maxSubscriptionsPerConnection = 2 })
    }

    // MARK: Exchanges, queues and consumers (PROTOCOL.md §5.8–5.12)

    @Test func malformedRoutingFramesCloseTheConnection() async throws {
        try await expectConnectionRefused(hello + [6, 0, 0, 0, 0x44, 1, 0, 0, 0, 0], .malformedFrame, mentioning: "must be 9")
        try await expectConnectionRefused(
            hello + Frame.ack(deliveryTag: 1, flags: 0x80).encoded(), .malformedFrame, mentioning: "reserved")
        try await expectConnectionRefused(
            hello + Frame.publishTo(flags: 0x10, exchange: "", routingKey: "q", payload: []).encoded(), .malformedFrame,
            mentioning: "reserved")
        var badKind = Frame.declareExchange(requestID: 1, name: "x", kind: .fanout).encoded()
        badKind[badKind.count - 2] = 9
        try await expectConnectionRefused(hello + badKind, .malformedFrame, mentioning: "unknown exchange kind 9")
        try await expectConnectionRefused(
            hello + Frame.confirm(sequence: 1, flags: 0).encoded(), .unexpectedFrame, mentioning: "sent by the broker")
    }

    @Test func unknownExchangeRefusesOnlyThatPublish() async throws {
        try await expectRequestRefused(.publishTo(flags: 0, exchange: "nope", routingKey: "k", payload: []), .unknownExchange, requestID: 0)
    }

    @Test func unknownQueue() async throws {
        try await expectRequestRefused(.consume(consumerID: 4, queue: "nope", flags: 1, prefetch: 0), .unknownQueue, requestID: 4)
    }

    @Test func unknownDeliveryTag() async throws {
        try await expectRequestRefused(.ack(deliveryTag: 5, flags: 0), .unknownDeliveryTag, requestID: 0)
    }

    @Test func conflictingDeclaration() async throws {
        try await expectRequestRefused(
            .declareExchange(requestID: 2, name: "x", kind: .topic), .preconditionFailed, requestID: 2,
            setup: [.declareExchange(requestID: 1, name: "x", kind: .direct)])
    }

    @Test func invalidName() async throws {
        try await expectRequestRefused(.declareQueue(requestID: 6, name: "has space"), .invalidName, requestID: 6)
    }

    @Test func reservedName() async throws {
        try await expectRequestRefused(.declareExchange(requestID: 6, name: "amq.x", kind: .topic), .accessRefused, requestID: 6)
    }

    @Test func unknownConsumer() async throws {
        try await expectRequestRefused(.cancel(consumerID: 8), .unknownConsumer, requestID: 8)
    }

    @Test func fullRejectPublishQueue() async throws {
        try await expectRequestRefused(
            .publishTo(flags: 0, exchange: "", routingKey: "q", payload: [2]), .queueFull, requestID: 0,
            setup: [.declareQueue(requestID: 1, name: "q", options: QueueOptions(maxLength: 0, overflow: .rejectPublish))])
    }

    // MARK: Requests (PROTOCOL.md §5.13)

    @Test func subscriptionIDZeroIsTheInboxs() async throws {
        try await expectRequestRefused(.subscribe(subscriptionID: 0, pattern: "a"), .duplicateSubscription, requestID: 0)
    }

    @Test func requestWithoutCorrelationID() async throws {
        try await expectRequestRefused(
            .publishTo(flags: PublishFlag.request, exchange: "", routingKey: "q", properties: MessageProperties(replyTo: "amq.inbox.1"), payload: []),
            .invalidRequest, requestID: 0)
    }

    @Test func requestWhoseReplyToNamesNothing() async throws {
        try await expectRequestRefused(
            .publishTo(flags: PublishFlag.request, exchange: "", routingKey: "q",
                       properties: MessageProperties(correlationID: "1", replyTo: "nowhere"), payload: []),
            .invalidRequest, requestID: 0)
    }

    @Test func requestWhoseReplyToIsADeadInbox() async throws {
        try await expectRequestRefused(
            .publishTo(flags: PublishFlag.request, exchange: "", routingKey: "q",
                       properties: MessageProperties(correlationID: "1", replyTo: "amq.inbox.424242"), payload: []),
            .invalidRequest, requestID: 0)
    }
}
