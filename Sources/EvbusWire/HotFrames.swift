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
