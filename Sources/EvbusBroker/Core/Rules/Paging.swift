import EvbusWire

/// Deep backlogs (docs/DURABILITY.md §4): a durable queue whose ready messages pass its memory
/// budget keeps the ones after that on disk only, in a `PagedRegion`, and has the storage thread
/// read them back as its consumers make room. A paged-out message costs no memory: its record in
/// the log is all there is of it until it is read back.
extension BrokerCore {
    // MARK: Out

    /// Whether a message for `queue` goes to disk only: the queue has a region already (order), or
    /// it has no consumer and this message would take its ready messages past the budget. A queue
    /// with consumers keeps the usual backpressure instead: its publishers slow to their pace
    /// (reading every message back would only make them slower), and nothing piles up.
    @inline(__always)
    func pagesOut(_ queue: MessageQueue, adding m: StoredMessage) -> Bool {
        queue.canPage
            && (queue.paged != nil
                || (queue.consumers.isEmpty && queue.readyMemory + m.tail.count > settings.durableQueueMemoryBytes))
    }

    /// Records `m` behind `queue`'s region (starting one if needed) instead of keeping it. Its
    /// segment is kept by the region's place in the log, not by a live count, until it is read back.
    func pageOut(_ m: StoredMessage, into queue: MessageQueue, transient: Bool) {
        let id = store!.takeMessageID()
        let bytes = m.tail.withUnsafeBytes { tail in
            store!.writer.appendMessage(
                queue: queue.durableID, id: id, delivered: false, transient: transient, request: m.isRequest,
                expiresAtMillis: wallMillis(at: m.expiresAt), tail: tail)
        }
        store!.forget(id)
        queue.diskBytes &+= UInt64(bytes)
        store!.openMessageBytes &+= bytes
        if !transient { store!.persisted &+= 1 }
        if queue.paged == nil {
            store!.pagingGeneration &+= 1
            queue.paged = PagedRegion(cursor: id, generation: store!.pagingGeneration)
            store!.pagingQueues.insert(queue.slot)
        }
        queue.paged!.add(batch: store!.openBatch, payloadBytes: m.payloadCount, recordBytes: bytes)
        var kept = m
        kept.storeID = id
        queue.paged!.keepRecent(kept, batch: store!.openBatch, limit: settings.durableQueueMemoryBytes / 2)
        queue.published &+= 1
        stats.queued &+= 1
        store!.pagedOut &+= 1
    }

    // MARK: In

    /// Asks for the next part of `queue`'s region when its consumers could take it: it has some,
    /// its memory is below half the budget, no read is under way and some of it is synced. When all
    /// that is left of the region is in memory too, it ends without a read.
    @inline(__always)
    func pageInIfNeeded(_ queue: MessageQueue) {
        guard let region = queue.paged, !region.reading, !queue.consumers.isEmpty,
            queue.readyMemory < settings.durableQueueMemoryBytes / 2
        else { return }
        if region.isAllRecent {
            takeRecent(queue)
        } else if region.readable > 0 {
            requestPageIn(queue, region)
        }
    }

    /// The region's messages are all in memory too: they join the queue's, and the region ends.
    private func takeRecent(_ queue: MessageQueue) {
        while let r = queue.paged!.recent.popFirst() {
            queue.restore(r.message)
            store!.remember(r.message.storeID)
        }
        endPaging(queue)
        dispatch(queue)
    }

    private func requestPageIn(_ queue: MessageQueue, _ region: PagedRegion) {
        var from = region.position
        if from.segment == 0 {
            guard let i = store!.segmentIndex(of: region.cursor) else { return }
            from = LogPosition(segment: store!.segments[i].number, offset: 0)
        }
        queue.paged!.reading = true
        queue.paged!.askedFor = region.readable
        output.readBack(PageRequest(
            queueSlot: queue.slot, queueID: queue.durableID, generation: region.generation, cursor: region.cursor,
            stopBefore: region.recent.first?.message.storeID ?? .max, from: from,
            maxBytes: max(settings.durableQueueMemoryBytes / 2, 4096), bits: region.bits))
    }

    /// The storage thread read part of a region back (on the loop thread): those messages join the
    /// queue's memory, in order, and go to its consumers.
    public func pagedIn(_ result: PageResult) {
        let request = result.request
        guard isPersisting, let queue = topology.queues[Int(request.queueSlot)], queue.durableID == request.queueID,
            var region = queue.paged, region.generation == request.generation
        else { return }  // the queue or its region went meanwhile
        region.reading = false
        if let error = result.error {
            output.log(.warning, nil, event: "page-in-failed", "cannot read queue \"\(queue.name)\"'s messages back from the log: \(error); tried again as it is used")
        }
        let nowWall = Self.wallNowMillis()
        let heldFrom = region.recent.first?.message.storeID ?? .max  // the reader stops before these
        var taken = 0
        for pm in result.messages where pm.id < heldFrom {
            taken += 1
            region.cursor = pm.id + 1
            guard let payloadCount = Self.payloadCount(ofTail: pm.tail) else { continue }
            var m = StoredMessage(tail: pm.tail, payloadCount: payloadCount, expiresAt: clockTime(ofWallMillis: pm.expiresAtMillis, now: nowWall))
            m.storeID = pm.id
            m.redelivered = pm.delivered
            m.isRequest = pm.isRequest
            queue.restore(m)
            store!.remember(pm.id)
            region.count -= 1
            region.payloadBytes &-= min(region.payloadBytes, UInt64(payloadCount))
            region.recordBytes &-= min(region.recordBytes, UInt64(pm.tail.count + RecordWriter.messageOverhead))
        }
        store!.pagedIn &+= UInt64(taken)
        region.position = result.next
        if taken == 0 && result.error == nil && region.askedFor > 0 {
            // The synced end was reached and the messages it should have held are not there
            // (damaged records skipped): they cannot be served, so the region stops counting them.
            output.log(.warning, nil, event: "page-in-failed", "\(region.askedFor) messages of queue \"\(queue.name)\" could not be read back from the log (damaged records) and are dropped")
            region.count -= region.askedFor
        }
        if let bits = region.bits, region.cursor >= bits.end { region.bits = nil }
        queue.paged = region
        if region.count <= 0 { endPaging(queue) }
        dispatch(queue)
        store!.collectDeletable(pinnedFrom: pagedFloor())
        submitRecords()
    }

    /// Clock nanoseconds for a wall-clock expiry in the log (0 stays 0: never).
    func clockTime(ofWallMillis millis: UInt64, now nowWall: UInt64) -> UInt64 {
        guard millis != 0 else { return 0 }
        return clock.now() &+ (millis > nowWall ? millis - nowWall : 0) * 1_000_000
    }

    // MARK: Bookkeeping

    /// The queue has nothing on disk only any more (read back, purged or deleted).
    func endPaging(_ queue: MessageQueue) {
        guard queue.paged != nil else { return }
        queue.paged = nil
        store?.pagingQueues.remove(queue.slot)
    }

    /// PURGE of a queue's paged-out messages: one record for the id range, as they are not in
    /// memory to be named. Returns how many there were.
    func purgePaged(_ queue: MessageQueue) -> Int {
        guard let region = queue.paged else { return 0 }
        if isPersisting {
            store!.writer.append(.purged(queue: queue.durableID, from: region.cursor, through: store!.nextMessageID - 1))
        }
        queue.diskBytes &-= min(queue.diskBytes, region.recordBytes)
        endPaging(queue)
        return region.count
    }

    /// The lowest id any region still needs: no segment holding ids from there on may go.
    func pagedFloor() -> UInt64 {
        var floor = UInt64.max
        for slot in store!.pagingQueues {
            if let q = topology.queues[Int(slot)], let region = q.paged { floor = min(floor, region.cursor) }
        }
        return floor
    }

    /// Batches up to `synced` are on disk; `failed` ones are not: the regions learn what they can read.
    func regionsProgressed(synced: UInt64, failed: [UInt64]) {
        for slot in store!.pagingQueues {
            guard let q = topology.queues[Int(slot)], q.paged != nil else { continue }
            if !failed.isEmpty {
                let lost = q.paged!.failed(failed)
                q.diskBytes &-= min(q.diskBytes, lost)
            }
            q.paged!.synced(upTo: synced)
            if q.paged!.count <= 0 {
                endPaging(q)
                continue
            }
            pageInIfNeeded(q)
        }
    }
}
