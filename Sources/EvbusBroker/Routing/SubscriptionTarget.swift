/// Where a matching message goes: one subscription of one connection. The connection is named by
/// the server's slot number, so the routing core holds no references to connection objects.
public struct SubscriptionTarget: Hashable, Sendable {
    public var connection: UInt32
    public var subscription: UInt32

    public init(connection: UInt32, subscription: UInt32) {
        self.connection = connection
        self.subscription = subscription
    }
}
