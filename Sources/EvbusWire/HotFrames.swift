/// Zero-copy access to the two frames on the hot path: PUBLISH in, DELIVER out.

/// A PUBLISH body seen in place: the topic bytes (not yet validated) and the payload.
public struct PublishView {
    public var topic: UnsafeRawBufferPointer
    public var payload: UnsafeRawBufferPointer

    @inlinable
    public init(body: UnsafeRawBufferPointer) throws(WireError) {
        var r = ByteReader(body)
        topic = try r.stringBytes("topic")
        payload = r.rest()
    }
}

/// Encodes a DELIVER frame straight into memory reserved in a connection's write queue.
public enum DeliverEncoder {
    /// Bytes the whole frame takes (header included).
    @inlinable
    public static func size(topicCount: Int, payloadCount: Int) -> Int {
        WireFormat.headerSize + 4 + 8 + 2 + topicCount + payloadCount
    }

    @inlinable
    public static func write(
        into base: UnsafeMutableRawPointer, subscriptionID: UInt32, publisher: UInt64,
        topic: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer
    ) {
        var w = ByteWriter(base)
        w.header(.deliver, bodyCount: 4 + 8 + 2 + topic.count + payload.count)
        w.u32(subscriptionID)
        w.u64(publisher)
        w.string(topic)
        w.bytes(payload)
    }
}

/// Encodes a PUBLISH frame into reserved memory (the peer library's hot path).
public enum PublishEncoder {
    @inlinable
    public static func size(topicCount: Int, payloadCount: Int) -> Int {
        WireFormat.headerSize + 2 + topicCount + payloadCount
    }

    @inlinable
    public static func write(into base: UnsafeMutableRawPointer, topic: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer) {
        var w = ByteWriter(base)
        w.header(.publish, bodyCount: 2 + topic.count + payload.count)
        w.string(topic)
        w.bytes(payload)
    }
}
