import EvbusWire
import Foundation
import Testing

/// docs/PROTOCOL.md is a public contract: its worked example must be what the codec produces.
@Suite struct ProtocolDocTests {
    static let doc = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("docs/PROTOCOL.md")

    /// The hex bytes of the first code block after `heading`, split by direction, in order.
    func sessionBytes(after heading: String = "## 9. A minimal session") throws -> (client: [UInt8], broker: [UInt8]) {
        let text = try String(contentsOf: Self.doc, encoding: .utf8)
        let section = text.components(separatedBy: heading)[1].components(separatedBy: "```")[1]
        var client: [UInt8] = [], broker: [UInt8] = []
        var toClient = true
        for line in section.split(separator: "\n") {
            var tokens = line.split(separator: " ").map(String.init)
            if tokens.first == "client" { toClient = true; tokens.removeFirst(2) }
            else if tokens.first == "broker" { toClient = false; tokens.removeFirst(2) }
            for t in tokens {
                guard t.count == 2, let b = UInt8(t, radix: 16) else { break }
                if toClient { client.append(b) } else { broker.append(b) }
            }
        }
        return (client, broker)
    }

    @Test func workedSessionMatchesTheCodec() throws {
        let (client, broker) = try sessionBytes()
        let expectedClient = WireFormat.preamble
            + Frame.hello(clientName: "c1").encoded()
            + Frame.subscribe(subscriptionID: 1, pattern: "a.*").encoded()
            + Frame.publish(topic: "a.b", payload: Array("hi".utf8)).encoded()
            + Frame.close(code: 0, reason: "").encoded()
        let expectedBroker = Frame.welcome(version: 1, maxFrame: 1 << 20, connectionID: 1, brokerName: "evbus").encoded()
            + Frame.ok(requestID: 1).encoded()
            + Frame.deliver(subscriptionID: 1, publisher: 1, topic: "a.b", payload: Array("hi".utf8)).encoded()
        #expect(client == expectedClient)
        #expect(broker == expectedBroker)
    }

    @Test func queueSessionMatchesTheCodec() throws {
        let (client, broker) = try sessionBytes(after: "### 9.1 A queue session")
        let expectedClient = Frame.declareQueue(requestID: 2, name: "q").encoded()
            + Frame.consume(consumerID: 3, queue: "q", flags: ConsumeFlag.manualAck, prefetch: 10).encoded()
            + Frame.publishTo(flags: PublishFlag.confirm, exchange: "", routingKey: "q", payload: Array("hi".utf8)).encoded()
            + Frame.ack(deliveryTag: 1, flags: 0).encoded()
        let expectedBroker = Frame.queueOK(requestID: 2, info: QueueInfo(name: "q", messageCount: 0, consumerCount: 0)).encoded()
            + Frame.ok(requestID: 3).encoded()
            + Frame.message(consumerID: 3, deliveryTag: 1, flags: 0, publisher: 1, exchange: "", routingKey: "q", payload: Array("hi".utf8)).encoded()
            + Frame.confirm(sequence: 1, flags: AckFlag.multiple).encoded()
        #expect(client == expectedClient)
        #expect(broker == expectedBroker)
    }

    @Test func requestSessionMatchesTheCodec() throws {
        let (callerOut, callerIn) = try sessionBytes(after: "### 9.2 A request and its reply")
        let (responderOut, responderIn) = try sessionBytes(after: "The responder's connection:")
        let call = MessageProperties(correlationID: "7", replyTo: "amq.inbox.1")
        #expect(callerOut == Frame.publishTo(flags: PublishFlag.request, exchange: "", routingKey: "rpc", properties: call, payload: Array("5".utf8)).encoded())
        #expect(callerIn == Frame.deliver(subscriptionID: 0, publisher: 2, topic: "amq.inbox.1", properties: MessageProperties(correlationID: "7"), payload: Array("8".utf8)).encoded())
        #expect(responderIn == Frame.message(consumerID: 3, deliveryTag: 0, flags: 0, publisher: 1, exchange: "", routingKey: "rpc", properties: call, payload: Array("5".utf8)).encoded())
        #expect(responderOut == Frame.publishTo(flags: 0, exchange: "", routingKey: "amq.inbox.1", properties: MessageProperties(correlationID: "7"), payload: Array("8".utf8)).encoded())
    }

    @Test func everyFrameTypeAndErrorCodeIsDocumented() throws {
        let text = try String(contentsOf: Self.doc, encoding: .utf8)
        for type in FrameType.allCases {
            let hex = "0x" + String(type.rawValue, radix: 16, uppercase: false).leftPadded(to: 2)
            #expect(text.contains("`\(hex)` | \(type.name)"), "frame \(type.name) (\(hex)) missing from PROTOCOL.md")
        }
        for code in [ErrorCode.badMagic, .unsupportedVersion, .frameTooLarge, .unknownFrameType, .malformedFrame,
                     .unexpectedFrame, .slowConsumer, .shuttingDown, .handshakeTimeout, .invalidTopic, .invalidPattern,
                     .unknownSubscription, .duplicateSubscription, .tooManySubscriptions, .unknownExchange, .unknownQueue,
                     .queueLocked, .unknownDeliveryTag, .preconditionFailed, .invalidName, .queueFull, .unroutable,
                     .accessRefused, .unknownConsumer, .noResponder, .responderGone, .invalidRequest, .storageFailed,
                     .tooManyConnections, .quotaExceeded] {
            #expect(text.contains("| \(code.rawValue) | `\(code.name)` |"), "error \(code) missing from PROTOCOL.md")
        }
    }
}

extension String {
    func leftPadded(to n: Int) -> String { String(repeating: "0", count: max(0, n - count)) + self }
}
