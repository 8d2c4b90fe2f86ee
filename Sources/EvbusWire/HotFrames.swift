/// Zero-copy access to the two frames on the hot path: PUBLISH in, DELIVER out.

/// A PUBLISH body seen in place: the topic bytes (not yet validated), the raw properties block
/// (checked; copied unchanged into every DELIVER) and the payload.
public struct PublishView {
    public var topic: UnsafeRawBufferPointer
    public var properties: UnsafeRawBufferPointer
    public var payload: UnsafeRawBufferPointer

    @inlinable
    public init(body: UnsafeRawBufferPointer) throws(WireError) {
        var r = ByteReader(body)
        topic = try r.stringBytes("topic")
        properties = try MessageProperties.checkedBlock(&r)
        payload = r.rest()
    }
}

/// A DELIVER body seen in place (the peer's hot path).
public struct DeliverView {
    public var subscriptionID: UInt32
    public var publisher: UInt64
    public var topic: UnsafeRawBufferPointer
    public var properties: UnsafeRawBufferPointer
    public var payload: UnsafeRawBufferPointer

    @inlinable
    public init(body: UnsafeRawBufferPointer) throws(WireError) {
        var r = ByteReader(body)
        subscriptionID = try r.u32("subscription id")
        publisher = try r.u64("publisher")
        topic = try r.stringBytes("topic")
        properties = try MessageProperties.checkedBlock(&r)
        payload = r.rest()
    }

    /// The properties, decoded (free when there are none).
    public func decodedProperties() -> MessageProperties { MessageProperties.decode(block: properties) }
}

/// Encodes a DELIVER frame straight into memory reserved in a connection's write queue.
public enum DeliverEncoder {
    /// Bytes the whole frame takes (header included).
    @inlinable
    public static func size(topicCount: Int, propertiesCount: Int, payloadCount: Int) -> Int {
        WireFormat.headerSize + 4 + 8 + 2 + topicCount + propertiesCount + payloadCount
    }

    /// `properties` is a complete block as read from PUBLISH (at least its flags byte).
    @inlinable
    public static func write(
        into base: UnsafeMutableRawPointer, subscriptionID: UInt32, publisher: UInt64,
        topic: UnsafeRawBufferPointer, properties: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer
    ) {
        var w = ByteWriter(base)
        w.header(.deliver, bodyCount: 4 + 8 + 2 + topic.count + properties.count + payload.count)
        w.u32(subscriptionID)
        w.u64(publisher)
        w.string(topic)
        w.properties(properties)
        w.bytes(payload)
    }
}

/// Encodes a PUBLISH frame into reserved memory (the peer library's hot path).
public enum PublishEncoder {
    @inlinable
    public static func size(topicCount: Int, propertiesCount: Int, payloadCount: Int) -> Int {
        WireFormat.headerSize + 2 + topicCount + propertiesCount + payloadCount
    }

    /// `properties` is an encoded block (`MessageProperties.encoded()`; `[0]` for none).
    @inlinable
    public static func write(
        into base: UnsafeMutableRawPointer, topic: UnsafeRawBufferPointer, properties: UnsafeRawBufferPointer,
        payload: UnsafeRawBufferPointer
    ) {
        var w = ByteWriter(base)
        w.header(.publish, bodyCount: 2 + topic.count + properties.count + payload.count)
        w.string(topic)
        w.properties(properties)
        w.bytes(payload)
    }
}

/// A PUBLISH_TO body seen in place (the broker's queue hot path).
public struct PublishToView {
    public var flags: UInt8
    public var exchange: UnsafeRawBufferPointer
    public var routingKey: UnsafeRawBufferPointer
    public var properties: UnsafeRawBufferPointer
    public var payload: UnsafeRawBufferPointer

    @inlinable
    public init(body: UnsafeRawBufferPointer) throws(WireError) {
        var r = ByteReader(body)
        flags = try r.u8("flags")
        guard flags & PublishFlag.reserved == 0 else {
            throw WireError(.malformedFrame, "reserved PUBLISH_TO flag bits set (0x\(String(flags, radix: 16)))")
        }
        exchange = try r.stringBytes("exchange name")
        routingKey = try r.stringBytes("routing key")
        properties = try MessageProperties.checkedBlock(&r)
        payload = r.rest()
    }
}

/// A MESSAGE body seen in place (the peer's consumer hot path).
public struct MessageView {
    public var consumerID: UInt32
    public var deliveryTag: UInt64
    public var flags: UInt8
    public var publisher: UInt64
    public var exchange: UnsafeRawBufferPointer
    public var routingKey: UnsafeRawBufferPointer
    public var properties: UnsafeRawBufferPointer
    public var payload: UnsafeRawBufferPointer

    @inlinable
    public init(body: UnsafeRawBufferPointer) throws(WireError) {
        var r = ByteReader(body)
        consumerID = try r.u32("consumer id")
        deliveryTag = try r.u64("delivery tag")
        flags = try r.u8("flags")
        // The rest is a stored message's tail, as the broker keeps it.
        let tail = try MessageTailView(tail: r.rest())
        publisher = tail.publisher
        exchange = tail.exchange
        routingKey = tail.routingKey
        properties = tail.properties
        payload = tail.payload
    }

    public func decodedProperties() -> MessageProperties { MessageProperties.decode(block: properties) }
}

/// A queued message is kept as the tail of the MESSAGE frame that will carry it: publisher,
/// exchange, routing key, properties, payload. Delivering it is a 18-byte prefix and one copy.
public enum MessageEncoder {
    /// Bytes of the stored tail.
    @inlinable
    public static func tailSize(exchangeCount: Int, keyCount: Int, propertiesCount: Int, payloadCount: Int) -> Int {
        8 + 2 + exchangeCount + 2 + keyCount + propertiesCount + payloadCount
    }

    @inlinable
    public static func writeTail(
        into base: UnsafeMutableRawPointer, publisher: UInt64, exchange: UnsafeRawBufferPointer,
        routingKey: UnsafeRawBufferPointer, properties: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer
    ) {
        var w = ByteWriter(base)
        w.u64(publisher)
        w.string(exchange)
        w.string(routingKey)
        w.properties(properties)
        w.bytes(payload)
    }

    /// Bytes of the whole MESSAGE frame for a tail of `tailCount` bytes.
    @inlinable
    public static func size(tailCount: Int) -> Int { WireFormat.headerSize + 4 + 8 + 1 + tailCount }

    @inlinable
    public static func write(
        into base: UnsafeMutableRawPointer, consumerID: UInt32, deliveryTag: UInt64, flags: UInt8,
        tail: UnsafeRawBufferPointer
    ) {
        var w = ByteWriter(base)
        w.header(.message, bodyCount: 4 + 8 + 1 + tail.count)
        w.u32(consumerID)
        w.u64(deliveryTag)
        w.u8(flags)
        w.bytes(tail)
    }
}

/// Encodes a PUBLISH_TO frame into reserved memory (the peer library's path to exchanges).
public enum PublishToEncoder {
    @inlinable
    public static func size(exchangeCount: Int, keyCount: Int, propertiesCount: Int, payloadCount: Int) -> Int {
        WireFormat.headerSize + 1 + 2 + exchangeCount + 2 + keyCount + propertiesCount + payloadCount
    }

    @inlinable
    public static func write(
        into base: UnsafeMutableRawPointer, flags: UInt8, exchange: UnsafeRawBufferPointer,
        routingKey: UnsafeRawBufferPointer, properties: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer
    ) {
        var w = ByteWriter(base)
        w.header(.publishTo, bodyCount: 1 + 2 + exchange.count + 2 + routingKey.count + properties.count + payload.count)
        w.u8(flags)
        w.string(exchange)
        w.string(routingKey)
        w.properties(properties)
        w.bytes(payload)
    }
}

/// ACK and NACK frames: 14 bytes, encoded without allocation.
public enum AckEncoder {
    public static let size = WireFormat.headerSize + 9

    @inlinable
    public static func write(into base: UnsafeMutableRawPointer, type: FrameType, deliveryTag: UInt64, flags: UInt8) {
        var w = ByteWriter(base)
        w.header(type, bodyCount: 9)
        w.u64(deliveryTag)
        w.u8(flags)
    }
}

/// An ACK or NACK body seen in place: `u64 delivery_tag`, `u8 flags` (PROTOCOL.md §5.9).
public struct AckView {
    public var deliveryTag: UInt64
    public var flags: UInt8

    /// - Parameter isNack: NACK also allows the `requeue` bit.
    @inlinable
    public init(body: UnsafeRawBufferPointer, isNack: Bool) throws(WireError) {
        guard body.count == 9 else {
            throw WireError(.malformedFrame, "\(isNack ? "NACK" : "ACK") body is \(body.count) bytes; it must be 9")
        }
        deliveryTag = UInt64(littleEndian: body.loadUnaligned(as: UInt64.self))
        flags = body[8]
        let allowed = isNack ? AckFlag.multiple | AckFlag.requeue : AckFlag.multiple
        guard flags & ~allowed == 0 else {
            throw WireError(.malformedFrame, "reserved \(isNack ? "NACK" : "ACK") flag bits set (0x\(String(flags, radix: 16)))")
        }
    }
}

/// A stored message tail (what `MessageEncoder.writeTail` wrote: the end of a MESSAGE body) seen
/// in place.
public struct MessageTailView {
    public var publisher: UInt64
    public var exchange: UnsafeRawBufferPointer
    public var routingKey: UnsafeRawBufferPointer
    public var properties: UnsafeRawBufferPointer
    public var payload: UnsafeRawBufferPointer

    /// The properties block and the payload together, found without checking the block again:
    /// for the request path, which reads only the block's first fields (`routingFields`).
    @inlinable
    public static func propertiesAndPayload(ofTail tail: UnsafeRawBufferPointer) throws(WireError) -> UnsafeRawBufferPointer {
        var r = ByteReader(tail)
        _ = try r.u64("publisher")
        _ = try r.stringBytes("exchange name")
        _ = try r.stringBytes("routing key")
        return r.rest()
    }

    @inlinable
    public init(tail: UnsafeRawBufferPointer) throws(WireError) {
        var r = ByteReader(tail)
        publisher = try r.u64("publisher")
        exchange = try r.stringBytes("exchange name")
        routingKey = try r.stringBytes("routing key")
        properties = try MessageProperties.checkedBlock(&r)
        payload = r.rest()
    }
}
