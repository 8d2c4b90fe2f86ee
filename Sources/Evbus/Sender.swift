/// Who published a message, as the broker's kernel said when that publisher connected
/// (`SO_PEERCRED`): no client can claim another uid, gid or pid. The broker sends it once per
/// publisher (a SENDER frame, PROTOCOL.md §5.15), not with every message.
public struct Sender: Sendable, Hashable, CustomStringConvertible {
    /// The publisher's connection id (`Event.publisher`).
    public var connectionID: UInt64
    public var uid: UInt32
    public var gid: UInt32
    public var pid: UInt32
    /// The name it gave in HELLO: free text the publisher chose, so never proof of anything.
    public var name: String

    public init(connectionID: UInt64, uid: UInt32, gid: UInt32, pid: UInt32, name: String) {
        self.connectionID = connectionID
        self.uid = uid
        self.gid = gid
        self.pid = pid
        self.name = name
    }

    public var description: String { "uid \(uid) gid \(gid) pid \(pid)" + (name.isEmpty ? "" : " '\(name)'") }
}

/// The senders the broker announced on one connection (loop-bound, in `PeerConnection`).
struct SenderTable {
    private var known: [UInt64: Sender] = [:]
    /// The last one looked up: deliveries mostly come from one publisher at a time.
    private var last: Sender?

    mutating func learn(_ sender: Sender, forgetEarlier: Bool) {
        if forgetEarlier { known.removeAll() }
        known[sender.connectionID] = sender
        last = nil
    }

    /// The sender of a message from `publisher`, if the broker said (nil: published before the
    /// broker restarted, or by a connection it no longer remembers).
    @inline(__always)
    mutating func sender(of publisher: UInt64) -> Sender? {
        if let last, last.connectionID == publisher { return last }
        guard let found = known[publisher] else { return nil }
        last = found
        return found
    }
}
