import EvbusWire

/// The core's side of the persistence log: the batch being filled this turn, how far the storage
/// thread has got, which segment holds how many live messages, the deliveries and confirms waiting
/// for the disk. Plain bookkeeping; the rules that use it are in `Rules/Persistence.swift`.
struct DurableState {
    var writer = RecordWriter()
    /// The number the batch being filled will have.
    var openBatch: UInt64 = 1
    /// First message id recorded in the open batch, and its message records minus those settled
    /// again before it went.
    var openFirstID: UInt64
    var openMessages = 0
    /// Bytes of the message records in the open batch (compaction's cost estimate).
    var openMessageBytes = 0
    /// The storage thread's progress: every batch up to `written` is written or failed, up to
    /// `synced` is on disk or failed.
    var written: UInt64 = 0
    var synced: UInt64 = 0
    /// Confirms wait for the sync (`sync: always`) or not (`interval`).
    let confirmsWaitForSync: Bool
    let segmentBytes: Int

    var nextMessageID: UInt64
    var nextQueueID: UInt32

    /// Batches submitted and not yet synced, oldest first.
    var inflight = RingBuffer<Inflight>()
    /// Segments with their live (unsettled) messages, oldest first; the last is the current one.
    var segments: [SegmentAccount] = []
    /// Bytes written to the current segment (as submitted); past `segmentBytes` the next batch rolls.
    var currentSegmentBytes = 0
    /// The next batch starts a new segment with a topology snapshot (at start, when the segment
    /// is full, and after a failure, which may have lost topology records).
    var rollNext = true
    var deleteNext: [UInt64] = []

    /// Messages rewritten into a later segment by compaction: their id no longer says where they
    /// are (id → segment number).
    var moved: [UInt64: UInt64] = [:]
    /// Ids rewritten in the open batch, and those rewritten in batches not yet synced (a settle
    /// meanwhile leaves them where they were).
    var movingOpen: [UInt64] = []
    var pendingMoves = Set<UInt64>()
    /// The segment being compacted (0 = none): its live messages are being rewritten forward.
    var compacting: UInt64 = 0
    /// Slots of the queues with a region on disk (`PagedRegion`), and the last region's number.
    var pagingQueues = Set<UInt32>()
    var pagingGeneration: UInt64 = 0
    /// Figures: messages paged out, and read back.
    var pagedOut: UInt64 = 0
    var pagedIn: UInt64 = 0
    /// Figures: compactions started, messages rewritten.
    var compactions: UInt64 = 0
    var rewritten: UInt64 = 0

    /// False after a failed write or sync until a probe batch (a snapshot) reaches the disk again:
    /// meanwhile persistent publishes into durable queues and durable declarations are refused.
    var healthy = true
    var lastError: String?
    /// When the next probe goes out while unhealthy (clock ns; 0 = none due).
    var probeAt: UInt64 = 0

    /// Deliveries from durable queues waiting for their delivered or settled record to be written
    /// (so a restart knows they were delivered), in order.
    var held = RingBuffer<HeldDelivery>()
    /// Connections with confirms waiting for the disk.
    var waitingConfirms: [PublisherRef] = []

    // Figures for STATS and TOPOLOGY.
    var syncs: UInt64 = 0
    var batches: UInt64 = 0
    var failedBatches: UInt64 = 0
    var persisted: UInt64 = 0
    var refused: UInt64 = 0
    var segmentCount = 0
    var bytesOnDisk: UInt64 = 0
    /// Over the last rate sample (about a second): syncs per second, and persistent messages
    /// recorded per sync.
    var syncRate: UInt64 = 0
    var messagesPerSync: UInt64 = 0
    private var sampled: (syncs: UInt64, persisted: UInt64) = (0, 0)

    struct Inflight {
        var number: UInt64
        var firstID: UInt64
        /// Message records in it minus those settled since.
        var messages: Int
        var roll: Bool
        var deletes: [UInt64]
        var moves: [UInt64] = []
        var bytes = 0
        var messageBytes = 0
        var segment: UInt64 = 0
        var failed = false
    }

    struct SegmentAccount {
        var number: UInt64
        /// The first message id recorded while it was current (ids only grow, so a message's
        /// segment is the last one whose `firstID` is not above its id).
        var firstID: UInt64
        var live: Int
        /// Messages ever accounted to it, and bytes of its batches (they decide compaction).
        var recorded = 0
        var bytes = 0
        /// Bytes of its message records: their average is what rewriting one costs.
        var messageBytes = 0
    }

    struct HeldDelivery {
        var batch: UInt64
        var slot: UInt32
        var connectionID: UInt64
        var consumerID: UInt32
        var tag: UInt64
        var message: StoredMessage
    }

    init(confirmsWaitForSync: Bool, segmentBytes: Int, nextMessageID: UInt64, nextQueueID: UInt32) {
        self.confirmsWaitForSync = confirmsWaitForSync
        self.segmentBytes = segmentBytes
        self.nextMessageID = nextMessageID
        self.nextQueueID = nextQueueID
        openFirstID = nextMessageID
    }

    mutating func sampleRates(elapsedNanos: UInt64) {
        let syncs = self.syncs &- sampled.syncs
        let persisted = self.persisted &- sampled.persisted
        syncRate = syncs * 1_000_000_000 / max(elapsedNanos, 1)
        messagesPerSync = syncs == 0 ? 0 : persisted / syncs
        sampled = (self.syncs, self.persisted)
    }

    /// A message id, recorded in the open batch.
    mutating func takeMessageID() -> UInt64 {
        let id = nextMessageID
        nextMessageID += 1
        openMessages += 1
        return id
    }

    /// One message left its queue for good: it no longer keeps its segment alive.
    mutating func forget(_ id: UInt64) {
        pendingMoves.remove(id)
        if let segment = moved.removeValue(forKey: id) {
            if let i = segments.firstIndex(where: { $0.number == segment }) { segments[i].live -= 1 }
            return
        }
        if id >= openFirstID {
            openMessages -= 1
            return
        }
        if let first = inflight.first, id >= first.firstID {
            var i = inflight.count - 1
            while i > 0 && inflight[i].firstID > id { i -= 1 }
            var entry = inflight[i]
            entry.messages -= 1
            inflight[i] = entry
            return
        }
        if let i = segmentIndex(of: id) { segments[i].live -= 1 }
    }

    /// A message read back from a region is live again where it is recorded (`forget` undone).
    mutating func remember(_ id: UInt64) {
        if id >= openFirstID {
            openMessages += 1
            return
        }
        if let first = inflight.first, id >= first.firstID {
            var i = inflight.count - 1
            while i > 0 && inflight[i].firstID > id { i -= 1 }
            inflight[i].messages += 1
            return
        }
        if let i = segmentIndex(of: id) { segments[i].live += 1 }
    }

    /// The index in `segments` of the segment a synced message is in.
    func segmentIndex(of id: UInt64) -> Int? {
        if let segment = moved[id] { return segments.firstIndex { $0.number == segment } }
        guard !segments.isEmpty else { return nil }
        var lo = 0, hi = segments.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if segments[mid].firstID <= id { lo = mid } else { hi = mid - 1 }
        }
        return lo
    }

    /// Closes the open batch: its number, and it goes in flight.
    mutating func closeBatch() -> StoreBatch {
        let roll = rollNext
        rollNext = false
        let bytes = writer.take()
        if roll { currentSegmentBytes = 0 }
        currentSegmentBytes += bytes.count
        if currentSegmentBytes >= segmentBytes { rollNext = true }
        let batch = StoreBatch(number: openBatch, bytes: bytes, roll: roll, deleteSegments: deleteNext)
        deleteNext.removeAll()
        inflight.append(Inflight(
            number: openBatch, firstID: openFirstID, messages: openMessages, roll: roll, deletes: batch.deleteSegments,
            moves: movingOpen, bytes: bytes.count, messageBytes: openMessageBytes))
        movingOpen.removeAll()
        openMessageBytes = 0
        openBatch += 1
        openFirstID = nextMessageID
        openMessages = 0
        batches += 1
        return batch
    }

    /// Accounts a synced batch's messages to the segment it went to.
    mutating func account(_ batch: Inflight) {
        if segments.last?.number != batch.segment {
            segments.append(SegmentAccount(number: batch.segment, firstID: batch.firstID, live: 0))
        }
        segments[segments.count - 1].live += batch.messages
        segments[segments.count - 1].recorded += batch.messages
        segments[segments.count - 1].bytes += batch.bytes
        segments[segments.count - 1].messageBytes += batch.messageBytes
        // Rewritten messages (still live) now count in the new segment, not their old one.
        for id in batch.moves where pendingMoves.remove(id) != nil {
            if let old = segmentIndex(of: id) { segments[old].live -= 1 }
            moved[id] = batch.segment
            segments[segments.count - 1].live += 1
            segments[segments.count - 1].recorded += 1
        }
    }

    /// Queues for deletion the oldest segments with nothing live (never the current one), and
    /// none that may hold an id from `pinnedFrom` on (a region's messages are there). Only from
    /// the front: a later segment may hold the settle records of an earlier one's messages.
    mutating func collectDeletable(pinnedFrom: UInt64) {
        while segments.count > 1 && segments[0].live <= 0 && segments[1].firstID <= pinnedFrom {
            if segments[0].number == compacting { compacting = 0 }
            deleteNext.append(segments[0].number)
            segments.removeFirst()
        }
    }
}
