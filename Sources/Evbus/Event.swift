/// One message delivered to a subscription.
public struct Event: Sendable, Hashable {
    /// The topic it was published to.
    public var topic: String
    public var payload: [UInt8]
    /// The broker's id for the publishing connection (`Peer.connectionID` on the sender's side).
    public var publisher: UInt64
    /// The subscription (broker-side id) that matched.
    public var subscriptionID: UInt32
    /// Content type, correlation id, reply-to, message id, timestamp and headers, as published.
    public var properties: MessageProperties
    /// Who published it (uid, gid, pid), as the kernel told the broker; nil if the broker did not say.
    public var sender: Sender?

    public init(
        topic: String, payload: [UInt8], publisher: UInt64 = 0, subscriptionID: UInt32 = 0,
        properties: MessageProperties = .none, sender: Sender? = nil
    ) {
        self.topic = topic
        self.payload = payload
        self.publisher = publisher
        self.subscriptionID = subscriptionID
        self.properties = properties
        self.sender = sender
    }

    /// The payload as UTF-8 text (invalid bytes become U+FFFD).
    public var text: String { String(decoding: payload, as: UTF8.self) }
}

/// A delivered event seen in place, without copying: for handlers that must not allocate per event.
/// Its buffers point into the peer's read buffer and are valid only during the handler call; call
/// `event()` to keep a copy.
public struct EventView {
    public let topicBytes: UnsafeRawBufferPointer
    public let payload: UnsafeRawBufferPointer
    public let publisher: UInt64
    public let subscriptionID: UInt32
    /// The raw properties block (PROTOCOL.md §5.7).
    public let propertiesBytes: UnsafeRawBufferPointer
    /// Who published it, as the kernel told the broker; nil if the broker did not say.
    public let sender: Sender?

    /// The topic as a String (allocates for topics over 15 bytes).
    public var topic: String { String(decoding: topicBytes, as: UTF8.self) }

    /// The message properties, decoded on demand (free when there are none).
    public var properties: MessageProperties { MessageProperties.decode(block: propertiesBytes) }

    /// An owned copy.
    public func event() -> Event {
        Event(topic: topic, payload: Array(payload), publisher: publisher, subscriptionID: subscriptionID, properties: properties, sender: sender)
    }
}
