import EvbusWire

/// The core's traffic with the storage threads: one batch of records per turn out, their progress
/// (written, synced, failed) back in, and what a failed write or sync does.
extension BrokerCore {
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
                output.log(.warning, nil, event: "store-recovered", "the data directory is writable again: persistent messages are accepted again")
            }
        }
        if !store!.pagingQueues.isEmpty { regionsProgressed(synced: store!.synced, failed: p.failed) }
        store!.collectDeletable(pinnedFrom: pagedFloor())
        compactIfWorthIt()
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
            for id in store!.inflight[i].moves { store!.pendingMoves.remove(id) }  // not moved
            if !store!.inflight[i].moves.isEmpty { store!.compacting = 0 }
            store!.failedBatches += 1
            let end = i + 1 < store!.inflight.count ? store!.inflight[i + 1].firstID : store!.openFirstID
            ranges.append(store!.inflight[i].firstID..<end)
        }
        // Not in the log after all: no id, and no bytes on disk counted for its queue.
        func unmark(_ m: inout StoredMessage, in q: MessageQueue) {
            guard m.storeID != 0, ranges.contains(where: { $0.contains(m.storeID) }) else { return }
            m.storeID = 0
            q.diskBytes &-= min(q.diskBytes, UInt64(m.tail.count + RecordWriter.messageOverhead))
        }
        for q in topology.liveQueues where q.durableID != 0 { q.updateReady { unmark(&$0, in: q) } }
        for case let s? in sessions { s.ledger.updateOutstanding { unmark(&$0, in: $1.queue) } }
        let reason = error.map { $0.description } ?? "storage failed"
        if store!.healthy {
            output.log(.warning, nil, event: "store-failed", "cannot persist: \(reason); persistent publishes into durable queues are refused until it can again")
        }
        store!.healthy = false
        store!.lastError = reason
        store!.rollNext = true  // the lost batches may have held topology records: write it all again
        store!.probeAt = clock.now() &+ 1_000_000_000
        for ref in store!.waitingConfirms {
            guard let s = session(ref.slot), s.id == ref.id, let link = s.durable else { continue }
            for i in 0..<link.confirmWaits.count where numbers.contains(link.confirmWaits[i].batch) {
                link.confirmWaits[i].failed = true
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
}
