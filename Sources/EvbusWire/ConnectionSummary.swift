/// One connection as CONNECTIONS_REPLY describes it (PROTOCOL.md §5.5): who it is, what it
/// subscribes to and consumes, what waits for it, and its rates.
public struct ConnectionSummary: Hashable, Sendable {
    public var id: UInt64
    public var name: String
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32
    /// Its output is over the high watermark (a slow consumer right now).
    public var outputFull: Bool
    /// Its reading is paused: it publishes to a slow receiver under the backpressure policy.
    public var paused: Bool
    /// Bytes queued in the broker for it, not yet taken by its socket.
    public var bytesQueued: UInt64
    /// Messages it published, and messages delivered to it (subscriptions, queues, its inbox).
    public var published: UInt64
    public var delivered: UInt64
    /// Per second, over the broker's last one-second sample.
    public var publishRate: UInt32
    public var deliverRate: UInt32
    /// Queue deliveries it has not settled.
    public var unacked: UInt32
    /// Its subscription patterns, and the queues it consumes (one entry per consumer).
    public var subscriptions: [String]
    public var consumers: [String]

    public enum Flag {
        public static let outputFull: UInt8 = 0x01
        public static let paused: UInt8 = 0x02
    }

    public init(
        id: UInt64, name: String, pid: Int32, uid: UInt32, gid: UInt32, outputFull: Bool, paused: Bool, bytesQueued: UInt64,
        published: UInt64, delivered: UInt64, publishRate: UInt32, deliverRate: UInt32, unacked: UInt32,
        subscriptions: [String], consumers: [String]
    ) {
        self.id = id
        self.name = name
        self.pid = pid
        self.uid = uid
        self.gid = gid
        self.outputFull = outputFull
        self.paused = paused
        self.bytesQueued = bytesQueued
        self.published = published
        self.delivered = delivered
        self.publishRate = publishRate
        self.deliverRate = deliverRate
        self.unacked = unacked
        self.subscriptions = subscriptions
        self.consumers = consumers
    }
}

extension Frame {
    static func encodeConnections(_ connections: [ConnectionSummary], into body: inout BodyBuilder) {
        body.u32(UInt32(truncatingIfNeeded: connections.count))
        for c in connections {
            body.u64(c.id)
            body.string(c.name)
            body.u32(UInt32(bitPattern: c.pid))
            body.u32(c.uid)
            body.u32(c.gid)
            body.u8((c.outputFull ? ConnectionSummary.Flag.outputFull : 0) | (c.paused ? ConnectionSummary.Flag.paused : 0))
            body.u64(c.bytesQueued)
            body.u64(c.published)
            body.u64(c.delivered)
            body.u32(c.publishRate)
            body.u32(c.deliverRate)
            body.u32(c.unacked)
            body.u32(UInt32(truncatingIfNeeded: c.subscriptions.count))
            for s in c.subscriptions { body.string(s) }
            body.u32(UInt32(truncatingIfNeeded: c.consumers.count))
            for q in c.consumers { body.string(q) }
        }
    }

    static func decodeConnections(_ r: inout ByteReader) throws(WireError) -> [ConnectionSummary] {
        var out: [ConnectionSummary] = []
        for _ in 0..<(try r.u32("connection count")) {
            let id = try r.u64("connection id")
            let name = try r.string("name")
            let pid = Int32(bitPattern: try r.u32("pid"))
            let uid = try r.u32("uid")
            let gid = try r.u32("gid")
            let flags = try r.u8("connection flags")
            let queued = try r.u64("bytes queued")
            let published = try r.u64("published")
            let delivered = try r.u64("delivered")
            let publishRate = try r.u32("publish rate")
            let deliverRate = try r.u32("deliver rate")
            let unacked = try r.u32("unacked")
            var subscriptions: [String] = []
            for _ in 0..<(try r.u32("subscription count")) { subscriptions.append(try r.string("pattern")) }
            var consumers: [String] = []
            for _ in 0..<(try r.u32("consumer count")) { consumers.append(try r.string("queue name")) }
            out.append(ConnectionSummary(
                id: id, name: name, pid: pid, uid: uid, gid: gid, outputFull: flags & ConnectionSummary.Flag.outputFull != 0,
                paused: flags & ConnectionSummary.Flag.paused != 0, bytesQueued: queued, published: published, delivered: delivered,
                publishRate: publishRate, deliverRate: deliverRate, unacked: unacked, subscriptions: subscriptions, consumers: consumers))
        }
        return out
    }
}
