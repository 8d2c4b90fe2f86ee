/// One message delivered to a subscription.
public struct Event: Sendable, Hashable {
    /// The topic it was published to.
    public var topic: String
    public var payload: [UInt8]
    /// The broker's id for the publishing connection (`Peer.connectionID` on the sender's side).
    public var publisher: UInt64
    /// The subscription (broker-side id) that matched.
    public var subscriptionID: UInt32

    public init(topic: String, payload: [UInt8], publisher: UInt64 = 0, subscriptionID: UInt32 = 0) {
        self.topic = topic
        self.payload = payload
        self.publisher = publisher
        self.subscriptionID = subscriptionID
    }

    /// The payload as UTF-8 text (invalid bytes become U+FFFD).
    public var text: String { String(decoding: payload, as: UTF8.self) }
}
