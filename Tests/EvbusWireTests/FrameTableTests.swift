import EvbusWire
import Foundation
import Testing

/// Every frame type, encoded and decoded, byte-checked against the body layout PROTOCOL.md's §5
/// table gives for it: the table is read from the document, so a layout that changes in the code
/// or in the document alone fails here.
@Suite struct FrameTableTests {
    /// One field value, as the document's conventions (§2) lay it out.
    enum Field {
        case u8(UInt8), u16(UInt16), u32(UInt32), u64(UInt64), str(String), props(MessageProperties), rest([UInt8])

        /// The document's name for this field's type.
        var kind: String {
            switch self {
            case .u8: "u8"
            case .u16: "u16"
            case .u32: "u32"
            case .u64: "u64"
            case .str: "str"
            case .props: "props"
            case .rest: "bytes*"
            }
        }

        var bytes: [UInt8] {
            func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
            switch self {
            case .u8(let v): return [v]
            case .u16(let v): return le(v)
            case .u32(let v): return le(v)
            case .u64(let v): return le(v)
            case .str(let s): return le(UInt16(s.utf8.count)) + Array(s.utf8)
            case .props(let p): return p.encoded()
            case .rest(let b): return b
            }
        }
    }

    static let properties = MessageProperties(correlationID: "c7", replyTo: "amq.inbox.3", headers: ["k": "v"])
    static let options = QueueOptions(
        exclusive: true, autoDelete: false, maxLength: 10, maxBytes: nil, overflow: .rejectPublish, messageTTL: 500,
        deadLetterExchange: "dlx", deadLetterRoutingKey: nil)

    /// A sample of every frame type and the field values its body holds, in order.
    static let samples: [(Frame, [Field])] = [
        (.hello(clientName: "c1", flags: HelloFlag.senders), [.str("c1"), .u8(1)]),
        (.welcome(version: 1, maxFrame: 1 << 20, connectionID: 9, brokerName: "evbus"), [.u16(1), .u32(1 << 20), .u64(9), .str("evbus")]),
        (.ping(token: 0x0102_0304_0506_0708), [.u64(0x0102_0304_0506_0708)]),
        (.pong(token: 5), [.u64(5)]),
        (.close(code: 107, reason: "bye"), [.u16(107), .str("bye")]),
        (.error(code: .unknownQueue, requestID: 4, message: "no queue"), [.u16(ErrorCode.unknownQueue.rawValue), .u32(4), .str("no queue")]),
        (.ok(requestID: 3), [.u32(3)]),
        (.publish(topic: "a.b", properties: properties, payload: [1, 2]), [.str("a.b"), .props(properties), .rest([1, 2])]),
        (.subscribe(subscriptionID: 2, pattern: "a.*", policy: SlowPolicyCode.drop), [.u32(2), .str("a.*"), .u8(2)]),
        (.unsubscribe(subscriptionID: 2), [.u32(2)]),
        (.deliver(subscriptionID: 2, publisher: 8, topic: "a.b", payload: [3]), [.u32(2), .u64(8), .str("a.b"), .props(.none), .rest([3])]),
        (.sender(publisher: 8, uid: 1001, gid: 1002, pid: 42, name: "sensor", flags: SenderFlag.forgetEarlier),
         [.u64(8), .u32(1001), .u32(1002), .u32(42), .str("sensor"), .u8(1)]),
        (.stats(requestID: 6), [.u32(6)]),
        (.statsReply(requestID: 6, entries: [StatEntry("published", 12), StatEntry("acked", 3)]),
         [.u32(6), .u16(2), .str("published"), .u64(12), .str("acked"), .u64(3)]),
        (.topology(requestID: 11), [.u32(11)]),
        (.topologyReply(
            requestID: 11,
            exchanges: [ExchangeSummary(name: "x", kind: .fanout, bindings: [.init(queue: "q", key: "k")], subscriptions: 1, durable: true)],
            queues: [QueueSummary(
                name: "q", exclusive: true, autoDelete: false, ready: 1, readyBytes: 2, unacked: 3, consumers: 4,
                published: 5, delivered: 6, acked: 7, publishRate: 8, deliverRate: 9, ackRate: 10, durable: true, diskBytes: 11)]),
         // §5.12, field by field.
         [.u32(11), .u32(1), .str("x"), .u8(1), .u8(0x02), .u32(1), .u32(1), .str("q"), .str("k"),
          .u32(1), .str("q"), .u8(0x01 | 0x04), .u32(1), .u64(2), .u32(3), .u32(4), .u64(5), .u64(6), .u64(7), .u32(8), .u32(9), .u32(10),
          .u64(11)]),
        (.connections(requestID: 12), [.u32(12)]),
        (.connectionsReply(requestID: 12, connections: [ConnectionSummary(
            id: 7, name: "thermostat", pid: 4242, uid: 1000, gid: 100, outputFull: true, paused: false, bytesQueued: 65536,
            published: 3, delivered: 9, publishRate: 1, deliverRate: 2, unacked: 4, subscriptions: ["a.#", "b"], consumers: ["jobs"])]),
         // §5.5, field by field.
         [.u32(12), .u32(1), .u64(7), .str("thermostat"), .u32(4242), .u32(1000), .u32(100), .u8(0x01), .u64(65536), .u64(3), .u64(9),
          .u32(1), .u32(2), .u32(4), .u32(2), .str("a.#"), .str("b"), .u32(1), .str("jobs")]),
        (.declareExchange(requestID: 1, name: "logs", kind: .topic, passive: true), [.u32(1), .str("logs"), .u8(3), .u8(1)]),
        (.declareExchange(requestID: 1, name: "logs", kind: .topic, durable: true), [.u32(1), .str("logs"), .u8(3), .u8(2)]),
        (.deleteExchange(requestID: 1, name: "logs", ifUnused: true), [.u32(1), .str("logs"), .u8(1)]),
        (.declareQueue(requestID: 2, name: "q", options: options),
         [.u32(2), .str("q"), .u8(0x01 | 0x08), .u8(1), .u64(10), .u64(.max), .u32(500), .str("dlx"), .str("")]),
        (.declareQueue(requestID: 3, name: "d", options: QueueOptions(durable: true)),
         [.u32(3), .str("d"), .u8(0x20), .u8(0), .u64(.max), .u64(.max), .u32(.max), .str(""), .str("")]),
        (.queueOK(requestID: 2, info: QueueInfo(name: "q", messageCount: 5, consumerCount: 1)), [.u32(2), .str("q"), .u32(5), .u32(1)]),
        (.deleteQueue(requestID: 2, name: "q", ifUnused: false, ifEmpty: true), [.u32(2), .str("q"), .u8(0x02)]),
        (.purgeQueue(requestID: 2, name: "q"), [.u32(2), .str("q")]),
        (.bind(requestID: 3, queue: "q", exchange: "logs", key: "a.#"), [.u32(3), .str("q"), .str("logs"), .str("a.#")]),
        (.unbind(requestID: 3, queue: "q", exchange: "logs", key: "a.#"), [.u32(3), .str("q"), .str("logs"), .str("a.#")]),
        (.publishTo(flags: PublishFlag.confirm | PublishFlag.request, exchange: "", routingKey: "q", properties: properties, payload: [9]),
         [.u8(0x06), .str(""), .str("q"), .props(properties), .rest([9])]),
        (.consume(consumerID: 4, queue: "q", flags: ConsumeFlag.manualAck, prefetch: 10), [.u32(4), .str("q"), .u8(1), .u16(10)]),
        (.cancel(consumerID: 4), [.u32(4)]),
        (.message(consumerID: 4, deliveryTag: 1, flags: AckFlag.redelivered, publisher: 8, exchange: "", routingKey: "q", payload: [7]),
         [.u32(4), .u64(1), .u8(1), .u64(8), .str(""), .str("q"), .props(.none), .rest([7])]),
        (.ack(deliveryTag: 5, flags: AckFlag.multiple), [.u64(5), .u8(1)]),
        (.nack(deliveryTag: 5, flags: AckFlag.requeue), [.u64(5), .u8(2)]),
        (.confirm(sequence: 12, flags: AckFlag.nack), [.u64(12), .u8(2)]),
        (.returned(code: .unroutable, exchange: "amq.direct", routingKey: "k", properties: properties, payload: [1]),
         [.u16(ErrorCode.unroutable.rawValue), .str("amq.direct"), .str("k"), .props(properties), .rest([1])]),
        (.routed(reached: 2, correlationID: "c7"), [.u32(2), .str("c7")]),
    ]

    /// The field types of each frame's body in PROTOCOL.md §5's table, by frame name.
    static func documentedLayouts() throws -> [String: [String]] {
        let text = try String(contentsOf: ProtocolDocTests.doc, encoding: .utf8)
        let table = text.components(separatedBy: "## 5. Frame types")[1].components(separatedBy: "\n\n")[1]
        var layouts: [String: [String]] = [:]
        for row in table.split(separator: "\n") where row.hasPrefix("| `0x") {
            let cells = row.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            let body = cells[3]
            // Each field is written `type name`; count-prefixed repeats are checked by value.
            layouts[cells[1]] = body.components(separatedBy: "`").enumerated().compactMap { i, part in
                guard i % 2 == 1, let type = part.split(separator: " ").first else { return nil }
                return String(type)
            }
        }
        return layouts
    }

    @Test func everyFrameTypeHasASample() {
        let sampled = Set(Self.samples.map(\.0.type))
        #expect(sampled == Set(FrameType.allCases), "missing: \(Set(FrameType.allCases).subtracting(sampled).map(\.name))")
    }

    @Test(arguments: samples.indices)
    func encodingMatchesTheDocumentedLayoutAndDecodesBack(_ index: Int) throws {
        let (frame, fields) = Self.samples[index]
        let name = "\(frame.type.name)"
        let layout = try #require(try Self.documentedLayouts()[name], "\(name) has no row in PROTOCOL.md §5")
        // The sample's fields follow the documented types in order (repeated groups aside).
        switch frame.type {
        case .statsReply:
            #expect(layout == ["u32", "u16", "count", "str", "u64"], "u32 request_id, u16 count, then count × (str, u64)")
            #expect(fields.map(\.kind) == ["u32", "u16"] + Array(repeating: ["str", "u64"], count: 2).flatMap { $0 })
        case .topologyReply:
            #expect(layout.isEmpty, "TOPOLOGY_REPLY's layout is given in §5.12")
        case .connectionsReply:
            #expect(layout.isEmpty, "CONNECTIONS_REPLY's layout is given in §5.5")
        default:
            #expect(fields.map(\.kind) == layout, "\(name): the document says \(layout)")
        }
        let body = fields.flatMap(\.bytes)
        let expected = Field.u32(UInt32(body.count + 1)).bytes + [frame.type.rawValue] + body
        let encoded = frame.encoded()
        #expect(encoded == expected, "\(name) is not laid out as PROTOCOL.md says")
        let decoded = try encoded.withUnsafeBytes { raw in
            guard case .frame(let f, let consumed) = try FrameSplitter.next(raw, maxFrame: WireFormat.maxMaxFrame) else {
                throw WireError(.malformedFrame, "incomplete")
            }
            #expect(consumed == encoded.count)
            return try Frame.decode(type: f.type, body: f.body)
        }
        #expect(decoded == frame)
    }
}

@Suite struct RequestPropertiesEncoderTests {
    func written(_ id: String, replyTo: String?, headers: [String: String]) -> [UInt8] {
        let encodedHeaders = MessageProperties.encodedHeaders(headers)
        let idBytes = Array(id.utf8)
        let size = RequestPropertiesEncoder.size(
            correlationIDCount: idBytes.count, replyToCount: replyTo?.utf8.count, headersCount: encodedHeaders.count)
        var out = [UInt8](repeating: 0xEE, count: size)
        out.withUnsafeMutableBytes { raw in
            var w = ByteWriter(raw.baseAddress!)
            idBytes.withUnsafeBytes { i in
                encodedHeaders.withUnsafeBytes { h in
                    if let replyTo {
                        Array(replyTo.utf8).withUnsafeBytes { r in
                            RequestPropertiesEncoder.write(into: &w, correlationIDCount: i.count, { $0.bytes(i) }, replyTo: r, headers: h)
                        }
                    } else {
                        RequestPropertiesEncoder.write(into: &w, correlationIDCount: i.count, { $0.bytes(i) }, replyTo: nil, headers: h)
                    }
                }
            }
            #expect(w.offset == size)
        }
        return out
    }

    @Test func writesWhatMessagePropertiesEncodes() {
        #expect(written("r1", replyTo: "amq.inbox.7", headers: [:])
            == MessageProperties(correlationID: "r1", replyTo: "amq.inbox.7").encoded())
        #expect(written("r22", replyTo: "amq.inbox.7", headers: ["b": "2", "a": "1"])
            == MessageProperties(correlationID: "r22", replyTo: "amq.inbox.7", headers: ["b": "2", "a": "1"]).encoded())
        #expect(written("c", replyTo: nil, headers: [:]) == MessageProperties(correlationID: "c").encoded())
        #expect(written("c", replyTo: nil, headers: ["evbus-status": "error"])
            == MessageProperties(correlationID: "c", headers: ["evbus-status": "error"]).encoded())
    }
}

/// The byte examples PROTOCOL.md gives for HELLO with flags and for SENDER.
@Suite struct IdentityFrameExampleTests {
    static func example(after marker: String) throws -> [UInt8] {
        let text = try String(contentsOf: ProtocolDocTests.doc, encoding: .utf8)
        let rest = try #require(text.components(separatedBy: marker).dropFirst().first)
        let code = try #require(rest.components(separatedBy: "`").dropFirst().first)
        return code.split(separator: " ").compactMap { UInt8($0, radix: 16) }
    }

    @Test func helloWithFlagsAndSenderAreLaidOutAsDocumented() throws {
        #expect(try Self.example(after: "Example, name `c1` with senders:") == Frame.hello(clientName: "c1", flags: HelloFlag.senders).encoded())
        #expect(try Self.example(after: "pid 42, name `s`, no flags:")
            == Frame.sender(publisher: 8, uid: 1001, gid: 1001, pid: 42, name: "s", flags: 0).encoded())
    }

    @Test func undefinedHelloFlagsAreMalformed() {
        let bytes = Frame.hello(clientName: "c1", flags: 0x03).encoded()
        #expect(throws: WireError(.malformedFrame, "HELLO flag bits 0x2 are not defined")) {
            try bytes.withUnsafeBytes { raw in
                _ = try Frame.decode(type: .hello, body: UnsafeRawBufferPointer(rebasing: raw[5...]))
            }
        }
    }
}
