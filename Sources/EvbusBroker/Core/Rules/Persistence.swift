import EvbusWire
import Glibc

/// Durable queues (docs/DURABILITY.md): every change to a durable exchange, queue or binding and
/// to a persistent message in a durable queue is recorded here, in the batch handed to the storage
/// thread at the end of each turn. Confirms of persistent publishes wait for their batch's sync;
/// deliveries from durable queues wait for their delivered record to be written, so a restart
/// flags exactly the messages a consumer may have seen as redelivered.
extension BrokerCore {
    // MARK: Topology records

    /// Why a durable change cannot be made now (the disk failed), or nil.
    func durableRefusal(_ what: String) -> WireError? {
        guard let store, !store.healthy else { return nil }
        return WireError(.storageFailed, "\(what) refused: the broker cannot write its data directory (\(store.lastError ?? "unknown error")); it retries every second")
    }

    func recordExchange(_ e: Exchange) {
        guard e.durable, isPersisting else { return }
        store!.writer.append(.exchange(name: e.name, kind: e.kind))
    }

    func recordExchangeDeleted(_ e: Exchange) {
        guard e.durable, isPersisting else { return }
        store!.writer.append(.exchangeDeleted(name: e.name))
    }

    /// Gives a new durable queue its log id and records it.
    func recordQueue(_ q: MessageQueue) {
        guard q.options.durable, isPersisting else { return }
        if q.durableID == 0 {
            q.durableID = store!.nextQueueID
            store!.nextQueueID += 1
        }
        store!.writer.append(.queue(id: q.durableID, name: q.name, options: q.options))
    }

    /// A durable queue went: its record goes, and its messages no longer keep segments alive.
    func recordQueueDeleted(_ q: MessageQueue, messages: [StoredMessage]) {
        guard q.durableID != 0, isPersisting else { return }
        store!.writer.append(.queueDeleted(id: q.durableID))
        for m in messages where m.storeID != 0 { store!.forget(m.storeID) }
    }

    /// A binding is durable when both its ends are.
    func recordBinding(queue: MessageQueue, exchange: String, key: String, bound: Bool) {
        guard queue.durableID != 0, isPersisting, let e = topology.exchanges[exchange], e.durable || e.builtIn else { return }
        store!.writer.append(bound
            ? .bound(queue: queue.durableID, exchange: exchange, key: key)
            : .unbound(queue: queue.durableID, exchange: exchange, key: key))
    }

    /// The whole durable topology, after a reset: the first records of every segment.
    func writeSnapshot() {
        guard isPersisting else { return }
        store!.writer.append(.topologyReset)
        for e in topology.exchanges.values.sorted(by: { $0.name < $1.name }) where e.durable {
            store!.writer.append(.exchange(name: e.name, kind: e.kind))
        }
        for q in topology.liveQueues where q.durableID != 0 {
            store!.writer.append(.queue(id: q.durableID, name: q.name, options: q.options))
        }
        for q in topology.liveQueues where q.durableID != 0 {
            for b in q.bindings.sorted(by: { ($0.exchange, $0.key) < ($1.exchange, $1.key) }) {
                recordBinding(queue: q, exchange: b.exchange, key: b.key, bound: true)
            }
        }
    }

    // MARK: Message records

    /// Records a persistent message entering a durable queue and returns its id. The caller has
    /// checked that the queue is durable, the message persistent and the store healthy.
    @inline(__always)
    func recordMessage(_ m: StoredMessage, into q: MessageQueue) -> UInt64 {
        let id = store!.takeMessageID()
        let bytes = m.tail.withUnsafeBytes { tail in
            store!.writer.appendMessage(
                queue: q.durableID, id: id, delivered: m.redelivered, expiresAtMillis: wallMillis(at: m.expiresAt), tail: tail)
        }
        q.diskBytes &+= UInt64(bytes)
        store!.persisted &+= 1
        return id
    }

    /// A persistent message left its durable queue for good (acked, dead-lettered, expired,
    /// dropped, purged, or delivered without acknowledgement).
    @inline(__always)
    func recordSettled(_ m: StoredMessage, from q: MessageQueue) {
        guard m.storeID != 0, isPersisting else { return }
        store!.writer.appendListed(.settled, queue: q.durableID, id: m.storeID)
        store!.forget(m.storeID)
        q.diskBytes &-= min(q.diskBytes, UInt64(m.tail.count + RecordWriter.messageOverhead))
    }

    /// Wall-clock milliseconds at clock time `at` (0 stays 0: never expires).
    func wallMillis(at: UInt64) -> UInt64 {
        guard at != 0 else { return 0 }
        let wallNow = Self.wallNowMillis()
        let now = clock.now()
        return at > now ? wallNow + (at - now) / 1_000_000 : wallNow
    }

    // MARK: Deliveries

    /// Whether a delivery from `q` to `receiver` must wait for the log: it writes a record (a
    /// first delivery of a persistent message, or one without acknowledgement, which settles it),
    /// or earlier deliveries to the same connection wait (order is kept).
    @inline(__always)
    func mustHold(_ m: StoredMessage, from q: MessageQueue, consumer: ConsumerRecord, to receiver: ConnectionState) -> Bool {
        q.durableID != 0 && isPersisting
            && ((m.storeID != 0 && (!m.redelivered || !consumer.manualAck)) || receiver.heldDeliveries > 0)
    }

    /// Records the delivery and holds its MESSAGE until that record is written. A delivery that
    /// writes nothing itself waits only for the one held before it.
    func hold(_ m: StoredMessage, from q: MessageQueue, consumer: ConsumerRecord, to receiver: ConnectionState, tag: UInt64) {
        var batch = store!.openBatch
        if m.storeID != 0 && !consumer.manualAck {
            recordSettled(m, from: q)
        } else if m.storeID != 0 && !m.redelivered {
            store!.writer.appendListed(.delivered, queue: q.durableID, id: m.storeID)
        } else if let previous = store!.held.last {
            batch = previous.batch
        }
        receiver.heldDeliveries += 1
        store!.held.append(.init(
            batch: batch, slot: receiver.slot, connectionID: receiver.id, consumerID: consumer.id, tag: tag, message: m))
    }

    /// Sends the held deliveries whose records are written.
    func releaseHeld() {
        while let h = store!.held.first, h.batch <= store!.written {
            _ = store!.held.popFirst()
            guard let receiver = session(h.slot), receiver.id == h.connectionID else { continue }
            receiver.heldDeliveries -= 1
            guard receiver.isOpen, let consumer = receiver.consumers[h.consumerID] else { continue }
            if consumer.manualAck && !receiver.ledger.isOutstanding(h.tag) { continue }
            writeMessage(h.message, consumer: consumer, tag: h.tag, to: receiver)
        }
    }

    // MARK: Batches and progress

    /// Hands this turn's records to the storage thread (one batch), if there are any.
    func submitRecords() {
        guard isPersisting else { return }
        // The first batch goes even when empty: the snapshot in a fresh segment checks the disk.
        guard store!.openBatch == 1 || !store!.writer.isEmpty || !store!.deleteNext.isEmpty else { return }
        // While the disk fails every batch rolls (and so probes): deliveries held for their records
        // keep flowing (each failed batch releases them), at worst without their records.
        if store!.rollNext { prependSnapshot() }
        output.persist(store!.closeBatch())
    }

    /// A rolling batch starts with the snapshot, so the new segment holds the whole topology.
    private func prependSnapshot() {
        let records = store!.writer.take()
        writeSnapshot()
        store!.writer.bytes.append(contentsOf: records)
    }

    /// The storage thread's report (on the loop thread): deliveries whose records are written go
    /// out, confirms whose batches are synced go out, failed batches are nacked.
    public func storageProgress(_ p: StoreProgress) {
        guard isPersisting else { return }
        for placed in p.placed {
            if let i = inflightIndex(placed.batch) { store!.inflight[i].segment = placed.segment }
        }
        if !p.failed.isEmpty { failed(p.failed, error: p.error) }
        store!.written = max(store!.written, p.written)
        store!.synced = max(store!.synced, p.synced)
        store!.segmentCount = p.segments
        store!.bytesOnDisk = p.bytesOnDisk
        store!.syncs = p.syncs
        releaseHeld()
        while let b = store!.inflight.first, b.number <= store!.synced {
            _ = store!.inflight.popFirst()
            if b.failed { continue }
            // The storage thread reports in order: a batch is placed before it is synced.
            assert(b.segment != 0, "batch \(b.number) synced before it was placed")
            store!.account(b)
            if b.roll && !store!.healthy {
                store!.healthy = true
                store!.probeAt = 0
                output.log(.warning, nil, "the data directory is writable again: persistent messages are accepted again")
            }
        }
        store!.collectDeletable()
        releaseConfirms()
        submitRecords()
    }

    private func inflightIndex(_ number: UInt64) -> Int? {
        guard let first = store!.inflight.first, number >= first.number else { return nil }
        let i = Int(number - first.number)
        return i < store!.inflight.count ? i : nil
    }

    /// Batches that did not reach the disk: their messages stay in memory only (they are marked
    /// not persisted), their confirms become nacks, and persisting stops until a probe succeeds.
    private func failed(_ numbers: [UInt64], error: StoreError?) {
        var ranges: [Range<UInt64>] = []
        for n in numbers {
            guard let i = inflightIndex(n) else { continue }
            store!.inflight[i].failed = true
            store!.deleteNext += store!.inflight[i].deletes  // not done: try again with the next batch
            store!.failedBatches += 1
            let end = i + 1 < store!.inflight.count ? store!.inflight[i + 1].firstID : store!.openFirstID
            ranges.append(store!.inflight[i].firstID..<end)
        }
        let unmark: (inout StoredMessage) -> Void = { m in
            if m.storeID != 0 && ranges.contains(where: { $0.contains(m.storeID) }) { m.storeID = 0 }
        }
        for q in topology.liveQueues where q.durableID != 0 { q.updateReady(unmark) }
        for case let s? in sessions { s.ledger.updateOutstanding(unmark) }
        let reason = error.map { $0.description } ?? "storage failed"
        if store!.healthy {
            output.log(.warning, nil, "cannot persist: \(reason); persistent publishes into durable queues are refused until it can again")
        }
        store!.healthy = false
        store!.lastError = reason
        store!.rollNext = true  // the lost batches may have held topology records: write it all again
        store!.probeAt = clock.now() &+ 1_000_000_000
        for ref in store!.waitingConfirms {
            guard let s = session(ref.slot), s.id == ref.id else { continue }
            for i in 0..<s.confirmWaits.count where numbers.contains(s.confirmWaits[i].batch) {
                s.confirmWaits[i].failed = true
            }
        }
        requestWake()
    }

    /// While unhealthy and idle, one probe a second: a batch with a snapshot in a new segment.
    func probeIfDue(now: UInt64) {
        guard let store, !store.healthy, store.probeAt != 0, store.probeAt <= now else { return }
        self.store!.probeAt = now &+ 1_000_000_000
        prependSnapshot()
        output.persist(self.store!.closeBatch())
    }

    // MARK: Figures

    /// The store's STATS entries (none when the broker keeps everything in memory).
    func storeEntries() -> [StatEntry] {
        guard let store else { return [] }
        return [
            StatEntry("store_healthy", store.healthy ? 1 : 0),
            StatEntry("store_segments", UInt64(store.segmentCount)),
            StatEntry("store_bytes", store.bytesOnDisk),
            StatEntry("store_syncs", store.syncs),
            StatEntry("store_batches", store.batches),
            StatEntry("store_failed_batches", store.failedBatches),
            StatEntry("store_persisted", store.persisted),
            StatEntry("store_refused", store.refused),
        ]
    }

    // MARK: Confirms

    /// Confirms of publishes whose records are synced go out, in sequence order; those whose batch
    /// failed are nacked, one by one.
    func releaseConfirms() {
        var still: [PublisherRef] = []
        for ref in store!.waitingConfirms {
            guard let s = session(ref.slot), s.id == ref.id else { continue }
            var upTo: UInt64 = 0
            while let w = s.confirmWaits.first, w.batch <= store!.synced || w.failed {
                _ = s.confirmWaits.popFirst()
                if w.nack || w.failed {
                    if upTo != 0 { sendConfirm(upTo, to: s); upTo = 0 }
                    let from = w.nack ? w.sequence : s.confirmAnswered + 1
                    for seq in from...max(from, w.sequence) { sendNack(seq, to: s) }
                } else {
                    upTo = w.sequence
                }
            }
            if upTo != 0 { sendConfirm(upTo, to: s) }
            if !s.confirmWaits.isEmpty { still.append(ref) } else { s.waitsForStore = false }
        }
        store!.waitingConfirms = still
    }

    func sendConfirm(_ sequence: UInt64, to s: ConnectionState) {
        send(.confirm(sequence: sequence, flags: AckFlag.multiple), to: s)
        s.confirmAnswered = sequence
    }

    func sendNack(_ sequence: UInt64, to s: ConnectionState) {
        send(.confirm(sequence: sequence, flags: AckFlag.nack), to: s)
        s.confirmAnswered = sequence
    }

    /// Queues a confirm (or nack) behind the disk.
    func waitForStore(_ s: ConnectionState, sequence: UInt64, batch: UInt64, nack: Bool) {
        let after = s.confirmWaits.isEmpty ? 0 : s.confirmWaits[s.confirmWaits.count - 1].batch
        s.confirmWaits.append(ConfirmWait(sequence: sequence, batch: max(batch, after), nack: nack))
        if !s.waitsForStore {
            s.waitsForStore = true
            store!.waitingConfirms.append(PublisherRef(slot: s.slot, id: s.id))
        }
    }
}

/// A confirm waiting for the disk: every sequence up to `sequence` is answered once batch `batch`
/// is synced (a nack answers `sequence` alone).
struct ConfirmWait {
    var sequence: UInt64
    var batch: UInt64
    var nack: Bool
    var failed = false
}
