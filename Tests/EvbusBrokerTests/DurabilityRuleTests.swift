@testable import EvbusBroker
import EvbusTestSupport
import EvbusWire
import Testing

/// The durability rules in the core alone, with the test playing the storage thread: what is
/// recorded, when confirms and deliveries may go, and what a failed write does.
@Suite struct DurabilityRuleTests {
    let persistent = MessageProperties(persistent: true)

    func frames(_ b: MemoryBroker, _ s: ConnectionState) throws -> [Frame] {
        var out: [Frame] = []
        while let f = try b.nextFrame(for: s) { out.append(f) }
        return out
    }

    /// Every record handed to the storage thread so far, decoded.
    func records(_ b: MemoryBroker) -> [StoreRecord] {
        var out: [StoreRecord] = []
        for batch in b.persisted {
            batch.bytes.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let length = Int(raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
                    let body = UnsafeRawBufferPointer(rebasing: raw[(offset + 8)..<(offset + 8 + length)])
                    if let r = StoreRecord.decode(body) { out.append(r) }
                    offset += 8 + length
                }
            }
        }
        return out
    }

    func durableQueue(_ b: MemoryBroker, _ c: ConnectionState, _ name: String = "jobs") throws {
        b.send([.declareQueue(requestID: 1, name: name, options: QueueOptions(durable: true))], from: c)
        guard case .queueOK = try frames(b, c).last else { throw TestSupportError("declare failed") }
    }

    /// A core persisting over an empty directory whose first batch is on disk, one connection, and
    /// the durable queue "jobs".
    func persistingBroker(sync: SyncMode = .always) throws -> (MemoryBroker, ConnectionState) {
        let b = MemoryBroker(persisting: true, sync: sync)
        b.storageDone()
        let p = b.connect()
        try durableQueue(b, p)
        return (b, p)
    }

    /// A publish with confirm into "jobs", persistent unless told otherwise.
    func put(_ b: MemoryBroker, _ p: ConnectionState, _ payload: UInt8, persistent: Bool = true, confirm: Bool = true) {
        b.send([.publishTo(
            flags: confirm ? PublishFlag.confirm : 0, exchange: "", routingKey: "jobs",
            properties: persistent ? self.persistent : .none, payload: [payload])], from: p)
    }

    func confirms(_ frames: [Frame]) -> [(UInt64, UInt8)] {
        frames.compactMap { if case .confirm(let s, let f) = $0 { (s, f) } else { nil } }
    }

    @Test func aStoredMessageStaysThirtyTwoBytes() {
        // Every queue slot and unacknowledged delivery holds one: the log id must not grow them.
        #expect(MemoryLayout<StoredMessage>.stride == 32)
    }

    @Test func aPersistentPublishIsConfirmedOnlyOnceItsBatchIsSynced() throws {
        let (b, p) = try persistingBroker()
        put(b, p, 1)
        #expect(confirms(try frames(b, p)).isEmpty, "confirmed before it reached the disk")
        #expect(records(b).contains { if case .message(_, _, false, false, false, false, 0, _) = $0 { true } else { false } })
        b.storageDone()
        #expect(confirms(try frames(b, p)).map(\.0) == [1])
        // A transient message into the same durable queue is not written and confirmed at once.
        let before = b.persisted.count
        put(b, p, 2, persistent: false)
        #expect(confirms(try frames(b, p)).map(\.0) == [2])
        #expect(b.persisted.count == before)
    }

    @Test func withSyncIntervalAPersistentPublishIsConfirmedAtOnce() throws {
        let (b, p) = try persistingBroker(sync: .interval(milliseconds: 100))
        put(b, p, 1)
        #expect(confirms(try frames(b, p)).map(\.0) == [1], "interval mode confirms without waiting for the sync")
        #expect(records(b).contains { if case .message = $0 { true } else { false } }, "but the message is still written")
    }

    @Test func aConfirmOfATransientPublishWaitsBehindAnEarlierPersistentOne() throws {
        let (b, p) = try persistingBroker()
        put(b, p, 1)
        put(b, p, 2, persistent: false)
        #expect(confirms(try frames(b, p)).isEmpty, "sequence 2 overtook sequence 1")
        b.storageDone()
        #expect(confirms(try frames(b, p)).map(\.0) == [2])  // one multiple confirm covers both
    }

    @Test func aDeliveryWaitsForItsDeliveredRecordAndAnAckIsRecorded() throws {
        let b = MemoryBroker(persisting: true)
        b.storageDone()
        let p = b.connect(), c = b.connect()
        try durableQueue(b, p)
        b.send([.consume(consumerID: 5, queue: "jobs", flags: ConsumeFlag.manualAck, prefetch: 10)], from: c)
        _ = try frames(b, c)
        put(b, p, 7, confirm: false)
        #expect(try frames(b, c).isEmpty, "delivered before the record saying so was written")
        #expect(records(b).contains { if case .delivered = $0 { true } else { false } })
        b.storageDone()
        let delivered = try frames(b, c)
        guard case .message(5, let tag, 0, _, _, _, let props, [7])? = delivered.first else {
            Issue.record("expected the message, got \(delivered)")
            return
        }
        #expect(props.persistent)
        b.send([.ack(deliveryTag: tag, flags: 0)], from: c)
        #expect(records(b).contains { if case .settled(_, let ids) = $0 { ids.count == 1 } else { false } })
    }

    @Test func aRedeliveryThatWritesNoRecordIsNotHeldForOne() throws {
        let b = MemoryBroker(persisting: true)
        b.storageDone()
        let p = b.connect(), first = b.connect()
        try durableQueue(b, p)
        put(b, p, 7, confirm: false)
        b.send([.consume(consumerID: 5, queue: "jobs", flags: ConsumeFlag.manualAck, prefetch: 10)], from: first)
        b.storageDone()
        #expect(try frames(b, first).contains { if case .message = $0 { true } else { false } })
        b.disconnect(first)  // unacknowledged: back to the queue, flagged redelivered
        let second = b.connect()
        let batches = b.persisted.count
        b.send([.consume(consumerID: 5, queue: "jobs", flags: ConsumeFlag.manualAck, prefetch: 10)], from: second)
        // Its delivered record was written the first time: nothing to write, nothing to wait for.
        #expect(b.persisted.count == batches)
        let out = try frames(b, second)
        #expect(out.contains { if case .message(5, _, AckFlag.redelivered, _, _, _, _, [7]) = $0 { true } else { false } }, "\(out)")
    }

    @Test func aFailedWriteNacksRefusesAndRecoversWhenAWriteSucceeds() throws {
        let (b, p) = try persistingBroker()
        put(b, p, 1)
        b.storageDone(failing: true)
        #expect(confirms(try frames(b, p)).map(\.1) == [AckFlag.nack])
        // The message stays queued, in memory only: its queue counts no bytes on disk for it.
        #expect(b.core.topology.summaries().queues.first { $0.name == "jobs" }.map { $0.ready == 1 && $0.diskBytes == 0 } == true)
        // While the disk fails: persistent publishes into durable queues and durable declarations
        // are refused with storage-failed; transient work goes on.
        put(b, p, 2)
        var out = try frames(b, p)
        #expect(out.contains { if case .error(.storageFailed, 0, _) = $0 { true } else { false } })
        #expect(confirms(out).map(\.0) == [2] && confirms(out).map(\.1) == [AckFlag.nack])
        b.send([.declareQueue(requestID: 9, name: "more", options: QueueOptions(durable: true))], from: p)
        #expect(try frames(b, p).contains { if case .error(.storageFailed, 9, _) = $0 { true } else { false } })
        put(b, p, 3, persistent: false)
        #expect(confirms(try frames(b, p)).map(\.1) == [AckFlag.multiple])
        #expect(b.logLines.contains { $0.contains("cannot persist") })
        // A second later the core probes with a snapshot; once that is on disk, all is well again.
        let beforeProbe = b.persisted.count
        b.advance(by: .seconds(1))
        #expect(b.persisted.count == beforeProbe + 1)
        #expect(b.persisted.last?.roll == true)
        b.storageDone()
        put(b, p, 4)
        b.storageDone()
        #expect(confirms(try frames(b, p)).map(\.1) == [AckFlag.multiple])
        // The queue still holds 1 (kept in memory), 3 (transient) and 4.
        let c = b.connect()
        b.send([.consume(consumerID: 1, queue: "jobs", flags: 0, prefetch: 0)], from: c)
        b.storageDone()
        out = try frames(b, c)
        let payloads = out.compactMap { if case .message(_, _, _, _, _, _, _, let payload) = $0 { payload } else { nil } }
        #expect(payloads == [[1], [3], [4]])
    }

    @Test func durableDeclarationsAreRecordedAndMismatchesRefused() throws {
        let b = MemoryBroker(persisting: true)
        b.storageDone()
        let c = b.connect()
        b.send([.declareExchange(requestID: 1, name: "logs", kind: .fanout, durable: true)], from: c)
        try durableQueue(b, c, "keep")
        b.send([.bind(requestID: 2, queue: "keep", exchange: "logs", key: "")], from: c)
        b.send([.declareExchange(requestID: 3, name: "logs", kind: .fanout)], from: c)
        b.send([.declareQueue(requestID: 4, name: "keep", options: QueueOptions())], from: c)
        b.send([.declareQueue(requestID: 5, name: "both", options: QueueOptions(exclusive: true, durable: true))], from: c)
        let out = try frames(b, c)
        for id: UInt32 in [3, 4, 5] {
            #expect(out.contains { if case .error(.preconditionFailed, id, _) = $0 { true } else { false } }, "request \(id)")
        }
        b.send([.topology(requestID: 6)], from: c)
        guard case .topologyReply(6, let exchanges, let queues)? = try frames(b, c).last else {
            Issue.record("no TOPOLOGY_REPLY")
            return
        }
        #expect(exchanges.first { $0.name == "logs" }?.durable == true)
        #expect(exchanges.first { $0.name == "amq.topic" }.map { $0.builtIn && !$0.durable } == true)
        #expect(queues.first { $0.name == "keep" }?.durable == true)
        let r = records(b)
        #expect(r.contains(.exchange(name: "logs", kind: .fanout)))
        #expect(r.contains { if case .queue(_, "keep", let o) = $0 { o.durable } else { false } })
        #expect(r.contains { if case .bound(_, "logs", "") = $0 { true } else { false } })
    }
}
