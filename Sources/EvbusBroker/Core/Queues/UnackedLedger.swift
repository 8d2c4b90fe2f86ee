public import EvbusWire

/// One connection's deliveries awaiting ACK/NACK, in delivery-tag order. Tags are consecutive on a
/// connection (1, 2, 3...; auto-ack deliveries carry tag 0 and are not recorded), so an entry is
/// found by subtraction, not by search, and a `multiple` ack walks a prefix.
public struct UnackedLedger {
    struct Entry {
        /// nil once settled (acked out of order: the slot stays until the prefix before it goes).
        var message: StoredMessage?
        /// Read only while `message` is set, and a consumer's outstanding entries are all settled
        /// before it is dropped (`takeAll`), so this never dangles when read; unchecked, it costs
        /// no retain and release per delivery.
        unowned(unsafe) var consumer: ConsumerRecord
    }

    private var entries = RingBuffer<Entry>(capacity: 0)
    /// The tag of `entries[0]`.
    private var firstTag: UInt64 = 1
    public private(set) var nextTag: UInt64 = 1
    public private(set) var outstanding = 0

    public init() {}

    /// Records a delivery and returns its tag.
    @inline(__always)
    public mutating func record(_ m: StoredMessage, consumer: ConsumerRecord) -> UInt64 {
        let tag = nextTag
        nextTag += 1
        if entries.isEmpty { firstTag = tag }
        entries.append(Entry(message: m, consumer: consumer))
        outstanding += 1
        return tag
    }

    /// One settled delivery: the message and the consumer it was delivered to.
    public struct Settled {
        public var message: StoredMessage
        public var consumer: ConsumerRecord
    }

    /// Settles every outstanding tag up to `tag` (tag 0 means all), appending each to `settled` in
    /// tag order. Throws `unknown-delivery-tag` when nothing outstanding matches: an unknown,
    /// already settled, or never-issued tag. The caller acts on `settled` afterwards, so no access
    /// to the ledger is open while it does.
    public mutating func settleUpTo(_ tag: UInt64, into settled: inout [Settled]) throws(WireError) {
        let last = tag == 0 ? nextTag - 1 : tag
        guard tag < nextTag, last >= firstTag, !entries.isEmpty else { throw unknown(tag) }
        let before = settled.count
        for i in 0...Int(last - firstTag) {
            if let m = entries[i].message {
                entries[i].message = nil
                outstanding -= 1
                settled.append(Settled(message: m, consumer: entries[i].consumer))
            }
        }
        guard settled.count > before else { throw unknown(tag) }
        compact()
    }

    /// Settles one tag (the common ACK): no closure, no allocation. Throws `unknown-delivery-tag`.
    @inline(__always)
    public mutating func settle(_ tag: UInt64) throws(WireError) -> (StoredMessage, ConsumerRecord) {
        guard tag >= firstTag, tag < nextTag, !entries.isEmpty else { throw unknown(tag) }
        let i = Int(tag - firstTag)
        guard let m = entries[i].message else { throw unknown(tag) }
        entries[i].message = nil
        outstanding -= 1
        let consumer = entries[i].consumer
        compact()
        return (m, consumer)
    }

    /// Removes every outstanding delivery of `consumer` (or of all consumers when nil), in tag
    /// order, for requeueing.
    public mutating func takeAll(of consumer: ConsumerRecord?) -> [Settled] {
        var taken: [Settled] = []
        for i in 0..<entries.count {
            guard let m = entries[i].message, consumer == nil || entries[i].consumer === consumer else { continue }
            entries[i].message = nil
            outstanding -= 1
            taken.append(Settled(message: m, consumer: entries[i].consumer))
        }
        compact()
        return taken
    }

    /// Whether `tag` is outstanding (issued and not settled).
    public func isOutstanding(_ tag: UInt64) -> Bool {
        guard tag >= firstTag, tag < nextTag, !entries.isEmpty else { return false }
        return entries[Int(tag - firstTag)].message != nil
    }

    /// Shows every outstanding delivery to `body`, in tag order (cold: compaction).
    func forEachOutstanding(_ body: (StoredMessage, ConsumerRecord) -> Void) {
        for i in 0..<entries.count {
            if let m = entries[i].message { body(m, entries[i].consumer) }
        }
    }

    /// Changes outstanding messages in place (cold: after a failed write un-marks persisted ones).
    mutating func updateOutstanding(_ body: (inout StoredMessage, ConsumerRecord) -> Void) {
        for i in 0..<entries.count {
            guard var m = entries[i].message else { continue }
            body(&m, entries[i].consumer)
            entries[i].message = m
        }
    }

    private mutating func compact() {
        while !entries.isEmpty && entries[0].message == nil {
            entries.removeFirst()
            firstTag += 1
        }
    }

    private func unknown(_ tag: UInt64) -> WireError {
        WireError(.unknownDeliveryTag, "delivery tag \(tag) is not an outstanding delivery on this connection (unknown, or already acknowledged)")
    }
}
