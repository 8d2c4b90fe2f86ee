public import EvbusWire

/// A message waiting in a queue or for its acknowledgement. Kept as the tail of the MESSAGE frame
/// that will carry it (publisher, exchange, routing key, properties, payload), so a delivery is a
/// short prefix plus one copy. One array allocation per queued message; nothing else.
public struct StoredMessage {
    public var tail: [UInt8]
    /// Monotonic nanoseconds after which it expires; 0 = never.
    public var expiresAt: UInt64
    /// Its id in the persistence log: a persistent message in a durable queue; 0 = not in the log.
    public var storeID: UInt64 = 0
    /// 32 bits (a payload is at most a frame, 64 MiB) beside the two flags: the value stays 32
    /// bytes, the size of every slot in every queue ring and unacknowledged ledger.
    private var payloadBytes: UInt32
    public var redelivered = false
    /// Published as a request (PUBLISH_TO flag 0x04): accepting it opens a request the broker
    /// watches until its reply (see `BrokerCore.openRequest`).
    public var isRequest = false

    public var payloadCount: Int { Int(payloadBytes) }

    public init(tail: [UInt8], payloadCount: Int, expiresAt: UInt64) {
        self.tail = tail
        payloadBytes = UInt32(payloadCount)
        self.expiresAt = expiresAt
    }

    /// Copies a message in from its parts (a PUBLISH_TO or PUBLISH view, or a dead letter).
    public init(
        publisher: UInt64, exchange: UnsafeRawBufferPointer, routingKey: UnsafeRawBufferPointer,
        properties: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, expiresAt: UInt64
    ) {
        let n = MessageEncoder.tailSize(
            exchangeCount: exchange.count, keyCount: routingKey.count, propertiesCount: properties.count,
            payloadCount: payload.count)
        tail = [UInt8](unsafeUninitializedCapacity: n) { buffer, initialized in
            MessageEncoder.writeTail(
                into: UnsafeMutableRawPointer(buffer.baseAddress!), publisher: publisher, exchange: exchange,
                routingKey: routingKey, properties: properties, payload: payload)
            initialized = n
        }
        payloadBytes = UInt32(payload.count)
        self.expiresAt = expiresAt
    }

    /// The parts, decoded (cold paths: dead-lettering, returns).
    public struct Parts {
        public var publisher: UInt64
        public var exchange: String
        public var routingKey: String
        public var properties: MessageProperties
        public var payload: [UInt8]
    }

    public func parts() -> Parts {
        tail.withUnsafeBytes { raw in
            // The tail was written by this process from checked input: it always parses.
            guard let view = try? MessageTailView(tail: raw) else {
                return Parts(publisher: 0, exchange: "", routingKey: "", properties: .none, payload: [])
            }
            return Parts(
                publisher: view.publisher, exchange: String(decoding: view.exchange, as: UTF8.self),
                routingKey: String(decoding: view.routingKey, as: UTF8.self),
                properties: MessageProperties.decode(block: view.properties), payload: Array(view.payload))
        }
    }

    /// The per-message TTL in a raw properties block: expiration is its last field, a u32.
    @inlinable
    public static func expiration(inPropertiesBlock block: UnsafeRawBufferPointer) -> UInt32? {
        guard block.count >= 5, block[0] & MessageProperties.Flag.expiration != 0 else { return nil }
        return UInt32(littleEndian: block.loadUnaligned(fromByteOffset: block.count - 4, as: UInt32.self))
    }
}
