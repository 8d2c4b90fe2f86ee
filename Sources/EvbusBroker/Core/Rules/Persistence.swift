import EvbusWire

/// Durable queues (docs/DURABILITY.md): every change to a durable exchange, queue or binding and
/// to a persistent message in a durable queue is recorded here, into the batch handed to the
/// storage threads at the end of each turn (`StorageProgress.swift`). What waits for the disk is in
/// `DurableDeliveries.swift`.
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
                queue: q.durableID, id: id, delivered: m.redelivered, request: m.isRequest, expiresAtMillis: wallMillis(at: m.expiresAt),
                tail: tail)
        }
        q.diskBytes &+= UInt64(bytes)
        store!.openMessageBytes &+= bytes
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

    // MARK: Figures

    /// The store's STATS entries (none when the broker keeps everything in memory).
    func storeEntries() -> [StatEntry] {
        guard let store else { return [] }
        return [
            StatEntry("store_healthy", store.healthy ? 1 : 0),
            StatEntry("store_segments", UInt64(store.segmentCount)),
            StatEntry("store_bytes", store.bytesOnDisk),
            StatEntry("store_syncs", store.syncs),
            StatEntry("store_syncs_per_second", store.syncRate),
            StatEntry("store_messages_per_sync", store.messagesPerSync),
            StatEntry("store_batches", store.batches),
            StatEntry("store_failed_batches", store.failedBatches),
            StatEntry("store_persisted", store.persisted),
            StatEntry("store_compactions", store.compactions),
            StatEntry("store_rewritten", store.rewritten),
            StatEntry("store_refused", store.refused),
            StatEntry("store_paging_queues", UInt64(store.pagingQueues.count)),
            StatEntry("store_paged_out", store.pagedOut),
            StatEntry("store_paged_in", store.pagedIn),
        ]
    }
}
