/// One consumer on one queue: which connection it belongs to, how it acknowledges, and how many of
/// its deliveries are unacknowledged (the prefetch window). Pure bookkeeping; the server delivers.
public final class ConsumerRecord {
    public let connectionSlot: UInt32
    public let connectionID: UInt64
    /// The client-chosen consumer id (its "consumer tag"), unique on its connection.
    public let id: UInt32
    public let manualAck: Bool
    /// Most unacknowledged deliveries at once; 0 = no limit.
    public let prefetch: Int
    /// The queue outlives its consumers: deleting a queue cancels every consumer first, so this
    /// reference never dangles, and being unchecked it costs no refcounting per delivery.
    public unowned(unsafe) let queue: MessageQueue
    /// Read and changed for every delivery and ACK, one access at a time on the loop thread (the
    /// dynamic exclusivity checks on it and `blocked` showed in the work-queue profile).
    @exclusivity(unchecked) public internal(set) var unacked = 0
    /// The connection's output is over its high watermark; set and cleared by the core.
    @exclusivity(unchecked) public var blocked = false

    public init(connectionSlot: UInt32, connectionID: UInt64, id: UInt32, manualAck: Bool, prefetch: Int, queue: MessageQueue) {
        self.connectionSlot = connectionSlot
        self.connectionID = connectionID
        self.id = id
        self.manualAck = manualAck
        self.prefetch = prefetch
        self.queue = queue
    }

    @inline(__always)
    public var hasCapacity: Bool { !blocked && (prefetch == 0 || unacked < prefetch) }
}
