import EvbusWire

/// When each connection still in its handshake must have finished it. Connections are accepted
/// in time order and all get the same timeout, so their deadlines come due in the order they were
/// added: a FIFO and one loop timer (for the oldest) replace a timer per connection, which cost
/// every idle connection two closures and a timer-table entry (about 0.2 KiB).
struct HandshakeDeadlines {
    struct Entry {
        var deadline: UInt64
        var slot: UInt32
        var connectionID: UInt64
    }

    private var entries = RingBuffer<Entry>(capacity: 0)

    var oldest: UInt64? { entries.first?.deadline }

    mutating func add(_ e: Entry) { entries.append(e) }

    /// Drops entries from the front while `finished` says their connection needs no deadline any
    /// more. Clients handshake about in the order they connect, so this keeps the queue as short
    /// as the number of handshakes in progress.
    mutating func dropFront(while finished: (Entry) -> Bool) {
        while let first = entries.first, finished(first) { entries.removeFirst() }
    }

    /// Removes and returns the oldest entry if it is due at `now`.
    mutating func popDue(_ now: UInt64) -> Entry? {
        guard let first = entries.first, first.deadline <= now else { return nil }
        entries.removeFirst()
        return first
    }
}
