import EvbusWire
import Glibc

/// Starting on a data directory: the recovered topology and messages become the core's, and the
/// first batch (a snapshot in a new segment) checks that the directory can be written.
extension BrokerCore {
    /// Turns persistence on with what `recovered` holds. Call once, before any connection opens.
    public func enablePersistence(_ recovered: RecoveredStore, sync: SyncMode, segmentBytes: Int) {
        var state = DurableState(
            confirmsWaitForSync: sync == .always, segmentBytes: segmentBytes,
            nextMessageID: recovered.nextMessageID, nextQueueID: recovered.nextQueueID)
        state.segments = recovered.segments.map { .init(number: $0.number, firstID: $0.firstID, live: $0.live, recorded: $0.live, bytes: segmentBytes, messageBytes: segmentBytes) }
        store = state
        isPersisting = true
        reserveConnectionIDs(below: recovered.nextConnectionID)
        for e in recovered.exchanges {
            do {
                let exchange = try topology.declareExchange(e.name, kind: e.kind, durable: true)
                if exchange.builtIn { output.log(.warning, nil, event: "recovery", "recovered exchange \"\(e.name)\" is built in; its record is ignored") }
            } catch {
                output.log(.warning, nil, event: "recovery", "recovered exchange \"\(e.name)\" not restored: \(error)")
            }
        }
        var bySlot: [UInt32: MessageQueue] = [:]
        for rq in recovered.queues {
            do {
                let q = try topology.declareQueue(rq.name, options: rq.options, connection: 0, requireDeadLetterExchange: false)
                q.durableID = rq.id
                bySlot[rq.id] = q
            } catch {
                output.log(.warning, nil, event: "recovery", "recovered queue \"\(rq.name)\" not restored: \(error)")
            }
        }
        for b in recovered.bindings {
            guard let q = bySlot[b.queue] else { continue }
            do {
                try topology.bind(queue: q.name, exchange: b.exchange, key: b.key, connection: 0)
            } catch {
                output.log(.warning, nil, event: "recovery", "recovered binding of \"\(q.name)\" to \"\(b.exchange)\" not restored: \(error)")
            }
        }
        var restored = 0
        let nowWall = Self.wallNowMillis()
        for rm in recovered.messages {
            guard let q = bySlot[rm.queue], let payloadCount = Self.payloadCount(ofTail: rm.tail) else { continue }
            var expiresAt: UInt64 = 0
            if rm.expiresAtMillis != 0 {
                let left = rm.expiresAtMillis > nowWall ? rm.expiresAtMillis - nowWall : 0
                expiresAt = clock.now() &+ left * 1_000_000
            }
            var m = StoredMessage(tail: rm.tail, payloadCount: payloadCount, expiresAt: expiresAt)
            m.storeID = rm.id
            m.redelivered = rm.delivered
            m.isRequest = rm.isRequest
            if rm.moved { store!.moved[rm.id] = rm.segment }
            q.restore(m)
            q.diskBytes &+= UInt64(rm.tail.count + RecordWriter.messageOverhead)
            restored += 1
        }
        var onDisk = 0
        for region in recovered.regions {
            guard let q = bySlot[region.queue] else { continue }
            store!.pagingGeneration &+= 1
            var paged = PagedRegion(cursor: region.firstID, generation: store!.pagingGeneration)
            paged.count = region.count
            paged.payloadBytes = region.payloadBytes
            paged.recordBytes = region.bytes
            paged.position = region.position
            paged.bits = recovered.bits
            q.paged = paged
            q.diskBytes &+= region.bytes
            store!.pagingQueues.insert(q.slot)
            onDisk += region.count
        }
        output.log(.info, nil, event: "recovery", "data directory: \(recovered.queues.count) durable queues, \(recovered.exchanges.count) durable exchanges, \(restored + onDisk) persistent messages restored from \(recovered.log.segments) segments (\(onDisk) left on disk until consumers ask)")
        for note in recovered.log.notes { output.log(.warning, nil, event: "recovery", "recovery: \(note)") }
        if recovered.unknownRecords > 0 {
            output.log(.warning, nil, event: "recovery", "recovery: \(recovered.unknownRecords) records of an unknown kind skipped")
        }
        store!.collectDeletable(pinnedFrom: pagedFloor())
    }

    /// After the config's declarations: durable queues declared there get their log ids, and the
    /// first batch (a snapshot of everything, in a fresh segment) goes to the storage thread.
    public func startPersisting() {
        guard isPersisting else { return }
        for q in topology.liveQueues where q.options.durable && q.durableID == 0 {
            q.durableID = store!.nextQueueID
            store!.nextQueueID += 1
        }
        // Recovered messages whose TTL ran out while the broker was down expire now, and the
        // others get their expiry armed; then the first batch (the snapshot, in a new segment).
        for q in topology.liveQueues where q.durableID != 0 && q.readyCount > 0 { dispatch(q) }
        submitRecords()
    }

    static func payloadCount(ofTail tail: [UInt8]) -> Int? {
        tail.withUnsafeBytes { raw in (try? MessageTailView(tail: raw))?.payload.count }
    }

    static func wallNowMillis() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_REALTIME, &t)
        return UInt64(t.tv_sec) * 1000 + UInt64(t.tv_nsec) / 1_000_000
    }
}
