import EvbusWire

/// A durable queue's messages kept on disk only (docs/DURABILITY.md §4): every message record of
/// the queue with an id from `cursor` on. Its cost in memory does not grow with its length: the
/// log is the list, in order, and a read brings the next part back as consumers catch up.
///
/// While a queue has one, every message put into it goes to the log behind it (a transient one
/// too, flagged so recovery drops it), so the queue's order is memory first, then the region.
///
/// The newest messages of a region are also kept in memory, up to half the budget (`recent`): when
/// consumers catch up with a burst, reads bring back only what is older than those, and the rest
/// joins the queue's memory without a read, ending the region.
struct PagedRegion {
    /// Messages in it, and their payload bytes (for TOPOLOGY's ready bytes).
    var count = 0
    var payloadBytes: UInt64 = 0
    /// Bytes of their records in the log (part of the queue's `diskBytes`).
    var recordBytes: UInt64 = 0
    /// The first id not yet read back: every message of the queue below it is in memory or gone.
    var cursor: UInt64
    /// Where the next read starts (segment 0: not known yet; the segment holding `cursor`).
    var position = LogPosition(segment: 0, offset: 0)
    /// After a restart: which of the replayed ids are still live.
    var bits: RecoveredBits?
    /// Tells this episode's reads from an earlier one's (after a purge, say).
    var generation: UInt64
    /// A read is under way; how many synced messages it was asked for with.
    var reading = false
    var askedFor = 0
    /// Messages put in it per batch not yet synced (not readable yet; a failed batch takes them
    /// out again), oldest first.
    var unsynced = RingBuffer<Unsynced>()
    var unsyncedCount = 0
    /// The region's newest messages, kept in memory too (oldest first), and the memory they take.
    var recent = RingBuffer<Recent>()
    var recentMemory = 0

    struct Recent {
        var batch: UInt64
        var message: StoredMessage
    }

    struct Unsynced {
        var batch: UInt64
        var count: Int
        var payloadBytes: UInt64
        var recordBytes: UInt64
    }

    init(cursor: UInt64, generation: UInt64) {
        self.cursor = cursor
        self.generation = generation
    }

    /// Messages only on disk that a read can find now: those older than `recent`, and synced.
    var readable: Int { count - max(recent.count, unsyncedCount) }

    /// Every message of the region is also in `recent`: it can end without a read.
    var isAllRecent: Bool { recent.count >= count }

    /// Keeps `m` (recorded in batch `batch`) as one of the newest; the oldest of them go to disk
    /// only once they take more than `limit`.
    mutating func keepRecent(_ m: StoredMessage, batch: UInt64, limit: Int) {
        recent.append(Recent(batch: batch, message: m))
        recentMemory += m.tail.count
        while recentMemory > limit, let oldest = recent.popFirst() { recentMemory -= oldest.message.tail.count }
    }

    /// One more message, recorded in batch `batch`.
    mutating func add(batch: UInt64, payloadBytes: Int, recordBytes: Int) {
        count += 1
        self.payloadBytes &+= UInt64(payloadBytes)
        self.recordBytes &+= UInt64(recordBytes)
        unsyncedCount += 1
        if unsynced.count > 0, unsynced[unsynced.count - 1].batch == batch {
            var last = unsynced[unsynced.count - 1]
            last.count += 1
            last.payloadBytes &+= UInt64(payloadBytes)
            last.recordBytes &+= UInt64(recordBytes)
            unsynced[unsynced.count - 1] = last
        } else {
            unsynced.append(.init(batch: batch, count: 1, payloadBytes: UInt64(payloadBytes), recordBytes: UInt64(recordBytes)))
        }
    }

    /// Batches up to `synced` are on disk: their messages can be read.
    mutating func synced(upTo synced: UInt64) {
        while let first = unsynced.first, first.batch <= synced {
            unsyncedCount -= first.count
            _ = unsynced.popFirst()
        }
    }

    /// These batches failed: their messages are not in the log. Returns their record bytes.
    mutating func failed(_ batches: [UInt64]) -> UInt64 {
        var kept = RingBuffer<Unsynced>()
        var lostBytes: UInt64 = 0
        while let entry = unsynced.popFirst() {
            if batches.contains(entry.batch) {
                count -= entry.count
                unsyncedCount -= entry.count
                payloadBytes &-= min(payloadBytes, entry.payloadBytes)
                recordBytes &-= min(recordBytes, entry.recordBytes)
                lostBytes &+= entry.recordBytes
            } else {
                kept.append(entry)
            }
        }
        unsynced = kept
        var keptRecent = RingBuffer<Recent>()
        while let r = recent.popFirst() {
            if batches.contains(r.batch) { recentMemory -= r.message.tail.count } else { keptRecent.append(r) }
        }
        recent = keptRecent
        return lostBytes
    }
}
