/// Where a routed message goes: one subscription of one connection, or one queue. Connections and
/// queues are named by the server's slot numbers, so the routing core holds no references to them.
public struct RouteTarget: Hashable, Sendable {
    /// A connection slot, or `queueMarker` for a queue target.
    public var connection: UInt32
    /// The subscription id on that connection, or the queue's slot.
    public var subscription: UInt32

    public init(connection: UInt32, subscription: UInt32) {
        self.connection = connection
        self.subscription = subscription
    }

    /// No connection has this slot; it marks a queue target.
    public static let queueMarker = UInt32.max

    public static func queue(_ slot: UInt32) -> RouteTarget { RouteTarget(connection: queueMarker, subscription: slot) }

    @inline(__always) public var isQueue: Bool { connection == Self.queueMarker }
    @inline(__always) public var queueSlot: UInt32 { subscription }
}
