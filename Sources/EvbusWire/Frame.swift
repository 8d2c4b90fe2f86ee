/// One named counter in a STATS_REPLY.
public struct StatEntry: Hashable, Sendable {
    public var name: String
    public var value: UInt64
    public init(_ name: String, _ value: UInt64) {
        self.name = name
        self.value = value
    }
}

/// Every frame of protocol version 1 as an owned value. The broker's publish/deliver hot path uses
/// the zero-copy views in `HotFrames.swift` instead; this type serves everything else and the tests.
public enum Frame: Hashable, Sendable {
    /// `flags`: `HelloFlag` bits (an optional byte after the name; absent = 0).
    case hello(clientName: String, flags: UInt8 = 0)
    case welcome(version: UInt16, maxFrame: UInt32, connectionID: UInt64, brokerName: String)
    case ping(token: UInt64)
    case pong(token: UInt64)
    case close(code: UInt16, reason: String)
    case error(code: ErrorCode, requestID: UInt32, message: String)
    case ok(requestID: UInt32)
    case publish(topic: String, properties: MessageProperties = .none, payload: [UInt8])
    /// `policy`: a `SlowPolicyCode` (an optional byte after the pattern; absent = 0, the broker's).
    case subscribe(subscriptionID: UInt32, pattern: String, policy: UInt8 = 0)
    case unsubscribe(subscriptionID: UInt32)
    case deliver(subscriptionID: UInt32, publisher: UInt64, topic: String, properties: MessageProperties = .none, payload: [UInt8])
    /// Who a publisher is, as the kernel said when it connected: sent once per publisher before
    /// its first DELIVER or MESSAGE, to connections that asked in HELLO (`HelloFlag.senders`).
    case sender(publisher: UInt64, uid: UInt32, gid: UInt32, pid: UInt32, name: String, flags: UInt8)
    case stats(requestID: UInt32)
    case statsReply(requestID: UInt32, entries: [StatEntry])
    case topology(requestID: UInt32)
    case topologyReply(requestID: UInt32, exchanges: [ExchangeSummary], queues: [QueueSummary])
    case connections(requestID: UInt32)
    case connectionsReply(requestID: UInt32, connections: [ConnectionSummary])
    case declareExchange(requestID: UInt32, name: String, kind: ExchangeKind, passive: Bool = false, durable: Bool = false)
    case deleteExchange(requestID: UInt32, name: String, ifUnused: Bool = false)
    case declareQueue(requestID: UInt32, name: String, options: QueueOptions = QueueOptions(), passive: Bool = false)
    case queueOK(requestID: UInt32, info: QueueInfo)
    case deleteQueue(requestID: UInt32, name: String, ifUnused: Bool = false, ifEmpty: Bool = false)
    case purgeQueue(requestID: UInt32, name: String)
    case bind(requestID: UInt32, queue: String, exchange: String, key: String)
    case unbind(requestID: UInt32, queue: String, exchange: String, key: String)
    case publishTo(flags: UInt8, exchange: String, routingKey: String, properties: MessageProperties = .none, payload: [UInt8])
    case consume(consumerID: UInt32, queue: String, flags: UInt8, prefetch: UInt16)
    case cancel(consumerID: UInt32)
    case message(
        consumerID: UInt32, deliveryTag: UInt64, flags: UInt8, publisher: UInt64, exchange: String, routingKey: String,
        properties: MessageProperties = .none, payload: [UInt8])
    case ack(deliveryTag: UInt64, flags: UInt8)
    case nack(deliveryTag: UInt64, flags: UInt8)
    case confirm(sequence: UInt64, flags: UInt8)
    case returned(code: ErrorCode, exchange: String, routingKey: String, properties: MessageProperties = .none, payload: [UInt8])
    case routed(reached: UInt32, correlationID: String)

    public var type: FrameType {
        switch self {
        case .hello: .hello
        case .welcome: .welcome
        case .ping: .ping
        case .pong: .pong
        case .close: .close
        case .error: .error
        case .ok: .ok
        case .publish: .publish
        case .subscribe: .subscribe
        case .unsubscribe: .unsubscribe
        case .deliver: .deliver
        case .sender: .sender
        case .stats: .stats
        case .statsReply: .statsReply
        case .topology: .topology
        case .topologyReply: .topologyReply
        case .connections: .connections
        case .connectionsReply: .connectionsReply
        case .declareExchange: .declareExchange
        case .deleteExchange: .deleteExchange
        case .declareQueue: .declareQueue
        case .queueOK: .queueOK
        case .deleteQueue: .deleteQueue
        case .purgeQueue: .purgeQueue
        case .bind: .bind
        case .unbind: .unbind
        case .publishTo: .publishTo
        case .consume: .consume
        case .cancel: .cancel
        case .message: .message
        case .ack: .ack
        case .nack: .nack
        case .confirm: .confirm
        case .returned: .returned
        case .routed: .routed
        }
    }
}

// MARK: - Encoding

extension Frame {
    /// The complete frame (header and body) as bytes.
    public func encoded() -> [UInt8] {
        var body = BodyBuilder()
        switch self {
        case .hello(let name, let flags):
            body.string(name)
            if flags != 0 { body.u8(flags) }
        case .sender(let publisher, let uid, let gid, let pid, let name, let flags):
            body.u64(publisher)
            body.u32(uid)
            body.u32(gid)
            body.u32(pid)
            body.string(name)
            body.u8(flags)
        case .welcome(let version, let maxFrame, let id, let name):
            body.u16(version)
            body.u32(maxFrame)
            body.u64(id)
            body.string(name)
        case .ping(let token), .pong(let token):
            body.u64(token)
        case .close(let code, let reason):
            body.u16(code)
            body.string(reason)
        case .error(let code, let requestID, let message):
            body.u16(code.rawValue)
            body.u32(requestID)
            body.string(message)
        case .ok(let requestID), .stats(let requestID), .topology(let requestID), .connections(let requestID):
            body.u32(requestID)
        case .connectionsReply(let requestID, let connections):
            body.u32(requestID)
            Self.encodeConnections(connections, into: &body)
        case .publish(let topic, let properties, let payload):
            body.string(topic)
            body.bytes.append(contentsOf: properties.encoded())
            body.bytes.append(contentsOf: payload)
        case .subscribe(let id, let pattern, let policy):
            body.u32(id)
            body.string(pattern)
            if policy != 0 { body.u8(policy) }
        case .unsubscribe(let id):
            body.u32(id)
        case .deliver(let id, let publisher, let topic, let properties, let payload):
            body.u32(id)
            body.u64(publisher)
            body.string(topic)
            body.bytes.append(contentsOf: properties.encoded())
            body.bytes.append(contentsOf: payload)
        case .statsReply(let requestID, let entries):
            body.u32(requestID)
            body.u16(UInt16(truncatingIfNeeded: entries.count))
            for entry in entries {
                body.string(entry.name)
                body.u64(entry.value)
            }
        case .topologyReply, .declareExchange, .deleteExchange, .declareQueue, .queueOK, .deleteQueue, .purgeQueue, .bind, .unbind, .publishTo, .consume, .cancel, .message, .ack, .nack, .confirm, .returned, .routed:
            encodeRouting(into: &body)
        }
        var frame = BodyBuilder()
        frame.u32(UInt32(truncatingIfNeeded: body.bytes.count + 1))
        frame.bytes.append(type.rawValue)
        frame.bytes.append(contentsOf: body.bytes)
        return frame.bytes
    }
}

/// Little-endian appends to an array; used for the cold frames only.
struct BodyBuilder {
    mutating func u8(_ v: UInt8) { bytes.append(v) }
    var bytes: [UInt8] = []
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    /// Strings longer than the u16 length can say are cut to fit (callers validate limits first),
    /// between characters: a cut inside one would leave bytes the receiver refuses as not UTF-8.
    mutating func string(_ s: String) {
        let utf8 = s.utf8
        if utf8.count <= Int(UInt16.max) {
            u16(UInt16(utf8.count))
            bytes.append(contentsOf: utf8)  // the contiguous fast path: no intermediate array
        } else {
            var end = utf8.index(utf8.startIndex, offsetBy: Int(UInt16.max))
            while utf8[end] & 0xC0 == 0x80 { end = utf8.index(before: end) }  // a continuation byte: not a start
            let kept = utf8[..<end]
            u16(UInt16(kept.count))
            bytes.append(contentsOf: kept)
        }
    }
}

// MARK: - Decoding

extension Frame {
    /// Decodes the body of a frame whose header was already split off (see `FrameSplitter`).
    /// Field-level damage throws `malformed-frame`; topic/pattern *rules* are checked by the broker,
    /// so that a bad topic refuses one request instead of the connection.
    public static func decode(type: FrameType, body: UnsafeRawBufferPointer) throws(WireError) -> Frame {
        var r = ByteReader(body)
        let frame: Frame
        switch type {
        case .hello:
            let name = try r.string("client name", maxBytes: WireFormat.maxNameBytes)
            let flags = r.remaining > 0 ? try r.u8("flags") : 0
            guard flags & ~HelloFlag.defined == 0 else {
                throw WireError(.malformedFrame, "HELLO flag bits 0x\(String(flags & ~HelloFlag.defined, radix: 16)) are not defined")
            }
            frame = .hello(clientName: name, flags: flags)
        case .sender:
            let publisher = try r.u64("publisher")
            let uid = try r.u32("uid"), gid = try r.u32("gid"), pid = try r.u32("pid")
            let name = try r.string("name", maxBytes: WireFormat.maxNameBytes)
            frame = .sender(publisher: publisher, uid: uid, gid: gid, pid: pid, name: name, flags: try r.u8("flags"))
        case .welcome:
            frame = .welcome(
                version: try r.u16("version"), maxFrame: try r.u32("max frame"),
                connectionID: try r.u64("connection id"),
                brokerName: try r.string("broker name", maxBytes: WireFormat.maxNameBytes))
        case .ping:
            frame = .ping(token: try r.u64("token"))
        case .pong:
            frame = .pong(token: try r.u64("token"))
        case .close:
            frame = .close(code: try r.u16("code"), reason: try r.string("reason"))
        case .error:
            frame = .error(
                code: ErrorCode(rawValue: try r.u16("code")), requestID: try r.u32("request id"),
                message: try r.string("message"))
        case .ok:
            frame = .ok(requestID: try r.u32("request id"))
        case .publish:
            let topic = try r.string("topic")
            let (properties, _) = try MessageProperties.read(&r)
            frame = .publish(topic: topic, properties: properties, payload: Array(r.rest()))
        case .subscribe:
            let id = try r.u32("subscription id")
            let pattern = try r.string("pattern")
            let policy = r.remaining > 0 ? try r.u8("policy") : 0
            guard policy <= SlowPolicyCode.disconnect else {
                throw WireError(.malformedFrame, "SUBSCRIBE policy \(policy) is not defined (0 to 3)")
            }
            frame = .subscribe(subscriptionID: id, pattern: pattern, policy: policy)
        case .unsubscribe:
            frame = .unsubscribe(subscriptionID: try r.u32("subscription id"))
        case .deliver:
            let id = try r.u32("subscription id")
            let publisher = try r.u64("publisher")
            let topic = try r.string("topic")
            let (properties, _) = try MessageProperties.read(&r)
            frame = .deliver(subscriptionID: id, publisher: publisher, topic: topic, properties: properties, payload: Array(r.rest()))
        case .stats:
            frame = .stats(requestID: try r.u32("request id"))
        case .statsReply:
            let id = try r.u32("request id")
            let count = Int(try r.u16("entry count"))
            var entries: [StatEntry] = []
            entries.reserveCapacity(count)
            for _ in 0..<count {
                entries.append(StatEntry(try r.string("entry name"), try r.u64("entry value")))
            }
            frame = .statsReply(requestID: id, entries: entries)
        case .connections:
            frame = .connections(requestID: try r.u32("request id"))
        case .connectionsReply:
            let id = try r.u32("request id")
            frame = .connectionsReply(requestID: id, connections: try decodeConnections(&r))
        case .topology, .topologyReply, .declareExchange, .deleteExchange, .declareQueue, .queueOK, .deleteQueue, .purgeQueue, .bind, .unbind, .publishTo, .consume, .cancel, .message, .ack, .nack, .confirm, .returned, .routed:
            frame = try decodeRouting(type: type, &r)
        }
        try r.expectEnd(type.name)
        return frame
    }
}

extension FrameType {
    /// The name used in PROTOCOL.md and in error messages.
    public var name: StaticString {
        switch self {
        case .hello: "HELLO"
        case .welcome: "WELCOME"
        case .ping: "PING"
        case .pong: "PONG"
        case .close: "CLOSE"
        case .error: "ERROR"
        case .ok: "OK"
        case .publish: "PUBLISH"
        case .subscribe: "SUBSCRIBE"
        case .unsubscribe: "UNSUBSCRIBE"
        case .deliver: "DELIVER"
        case .sender: "SENDER"
        case .stats: "STATS"
        case .statsReply: "STATS_REPLY"
        case .topology: "TOPOLOGY"
        case .topologyReply: "TOPOLOGY_REPLY"
        case .connections: "CONNECTIONS"
        case .connectionsReply: "CONNECTIONS_REPLY"
        case .declareExchange: "DECLARE_EXCHANGE"
        case .deleteExchange: "DELETE_EXCHANGE"
        case .declareQueue: "DECLARE_QUEUE"
        case .queueOK: "QUEUE_OK"
        case .deleteQueue: "DELETE_QUEUE"
        case .purgeQueue: "PURGE_QUEUE"
        case .bind: "BIND"
        case .unbind: "UNBIND"
        case .publishTo: "PUBLISH_TO"
        case .consume: "CONSUME"
        case .cancel: "CANCEL"
        case .message: "MESSAGE"
        case .ack: "ACK"
        case .nack: "NACK"
        case .confirm: "CONFIRM"
        case .returned: "RETURN"
        case .routed: "ROUTED"
        }
    }
}
