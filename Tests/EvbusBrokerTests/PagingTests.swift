@testable import EvbusBroker
import EvbusTestSupport
import EvbusWire
import Foundation
import Testing

/// Deep backlogs: the reader that brings paged-out messages back from segment files, recovery's
/// regions, and the core's rules for paging out and in (with the test playing the storage threads).
@Suite(.serialized) struct PagingTests {
    static func freshDirectory(_ tag: String) -> String { StoreTests.freshDirectory("paging-" + tag) }

    static func tail(_ text: String) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: MessageEncoder.tailSize(exchangeCount: 0, keyCount: 1, propertiesCount: 1, payloadCount: text.utf8.count))
        let exchange: [UInt8] = [], key: [UInt8] = [0x71], properties: [UInt8] = [0], payload = Array(text.utf8)
        out.withUnsafeMutableBytes { raw in
            exchange.withUnsafeBytes { e in key.withUnsafeBytes { k in properties.withUnsafeBytes { p in payload.withUnsafeBytes { b in
                MessageEncoder.writeTail(into: raw.baseAddress!, publisher: 1, exchange: e, routingKey: k, properties: p, payload: b)
            } } } }
        }
        return out
    }

    static func payload(_ m: PagedMessage) -> String {
        m.tail.withUnsafeBytes { String(decoding: (try! MessageTailView(tail: $0)).payload, as: UTF8.self) }
    }

    /// A log of message records for queues 1 and 2 (ids 1...n, odd ids queue 1), in 4 KiB segments.
    static func writeLog(_ dir: String, count: Int, extra: (inout RecordWriter) -> Void = { _ in }) throws -> SegmentLog {
        let log = try SegmentLog(directory: dir, segmentBytes: 4096) { _, _ in }
        for id in 1...count {
            var w = RecordWriter()
            _ = tail("m\(id)").withUnsafeBytes {
                w.appendMessage(queue: id % 2 == 1 ? 1 : 2, id: UInt64(id), delivered: false, expiresAtMillis: 0, tail: $0)
            }
            if id == count { extra(&w) }
            var bytes = w.take()
            try log.writeBatch(&bytes)
            try log.sync()
            if id % 20 == 0 { try log.roll() }
        }
        return log
    }

    func request(queue: UInt32, cursor: UInt64, from: LogPosition, maxBytes: Int, bits: RecoveredBits? = nil) -> PageRequest {
        PageRequest(queueSlot: 0, queueID: queue, generation: 1, cursor: cursor, from: from, maxBytes: maxBytes, bits: bits)
    }

    // MARK: The reader

    @Test func readsAQueuesRecordsInOrderInPartsFromWhereTheLastPartEnded() throws {
        let dir = Self.freshDirectory("reader")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let log = try Self.writeLog(dir, count: 100)
        #expect(log.segments.count >= 5)
        var position = LogPosition(segment: log.segments[0], offset: 0)
        var cursor: UInt64 = 1
        var got: [String] = []
        var parts = 0
        while true {
            let r = LogReader.read(request(queue: 1, cursor: cursor, from: position, maxBytes: 60), from: log.readableSegments())
            #expect(r.error == nil)
            if r.messages.isEmpty { break }
            parts += 1
            got += r.messages.map(Self.payload)
            cursor = r.messages.last!.id + 1
            position = r.next
        }
        #expect(got == stride(from: 1, through: 99, by: 2).map { "m\($0)" })
        #expect(parts > 5, "maxBytes did not split the reads: \(parts) parts")
        // From the cursor on only: a read from the start with a later cursor skips the earlier ids.
        let late = LogReader.read(request(queue: 2, cursor: 91, from: LogPosition(segment: log.segments[0], offset: 0), maxBytes: 1 << 20), from: log.readableSegments())
        #expect(late.messages.map(\.id) == [92, 94, 96, 98, 100])
    }

    /// A message published as a request says so in its record (flag 0x08): read back by the
    /// reader and decoded by recovery alike, beside the other flags.
    @Test func theRequestFlagIsRecordedAndReadBack() throws {
        let dir = Self.freshDirectory("request-flag")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let log = try SegmentLog(directory: dir, segmentBytes: 4096) { _, _ in }
        var w = RecordWriter()
        for (id, request) in [(UInt64(1), true), (2, false), (3, true)] {
            _ = Self.tail("m\(id)").withUnsafeBytes {
                w.appendMessage(queue: 1, id: id, delivered: id == 3, transient: id == 1, request: request, expiresAtMillis: 0, tail: $0)
            }
        }
        var bytes = w.take()
        // The first record's body (after its length and checksum), as recovery decodes it.
        let length = bytes.withUnsafeBytes { Int($0.loadUnaligned(as: UInt32.self)) }
        let decoded = Array(bytes[8..<(8 + length)]).withUnsafeBytes { StoreRecord.decode($0) }
        guard case .message(1, 1, false, false, true, true, 0, _)? = decoded else { return #expect(Bool(false), "\(String(describing: decoded))") }
        try log.writeBatch(&bytes)
        try log.sync()
        let r = LogReader.read(request(queue: 1, cursor: 1, from: LogPosition(segment: log.segments[0], offset: 0), maxBytes: 1 << 20), from: log.readableSegments())
        #expect(r.messages.map(\.isRequest) == [true, false, true])
        #expect(r.messages.map(\.delivered) == [false, false, true] && r.messages.map(\.transient) == [true, false, false])
    }

    @Test func readsOnlyWhatIsSyncedAndSkipsCompactionCopiesAndDamage() throws {
        let dir = Self.freshDirectory("reader-limits")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let log = try Self.writeLog(dir, count: 10) { w in
            // A compaction copy of message 3 (held in memory, so never read back).
            _ = Self.tail("m3").withUnsafeBytes { w.appendMessage(queue: 1, id: 3, delivered: false, moved: true, expiresAtMillis: 0, tail: $0) }
        }
        var w = RecordWriter()
        _ = Self.tail("m11").withUnsafeBytes { w.appendMessage(queue: 1, id: 11, delivered: false, expiresAtMillis: 0, tail: $0) }
        var unsynced = w.take()
        try log.writeBatch(&unsynced)  // written, not synced: not readable yet
        let start = LogPosition(segment: log.segments[0], offset: 0)
        #expect(LogReader.read(request(queue: 1, cursor: 1, from: start, maxBytes: 1 << 20), from: log.readableSegments()).messages.map(\.id) == [1, 3, 5, 7, 9])
        try log.sync()
        #expect(LogReader.read(request(queue: 1, cursor: 1, from: start, maxBytes: 1 << 20), from: log.readableSegments()).messages.map(\.id) == [1, 3, 5, 7, 9, 11])

        // One flipped byte inside message 5's record: it alone is lost.
        let path = log.path(of: log.segments[0])
        var bytes = try SegmentLog.readFile(path)
        let at = try #require(bytes.indices.first { i in i + 2 <= bytes.count && bytes[i] == UInt8(ascii: "m") && bytes[i + 1] == UInt8(ascii: "5") })
        bytes[at] ^= 0x40
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect(LogReader.read(request(queue: 1, cursor: 1, from: start, maxBytes: 1 << 20), from: log.readableSegments()).messages.map(\.id) == [1, 3, 7, 9, 11])
    }

    @Test func recoveredBitsSkipWhatWasSettledAndFlagWhatWasDelivered() throws {
        let dir = Self.freshDirectory("reader-bits")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let log = try Self.writeLog(dir, count: 20)
        var bitmap = IDBitmap()
        for id in stride(from: 1, through: 19, by: 2) { bitmap.setLive(UInt64(id), true) }
        bitmap.setLive(5, false)
        bitmap.setDelivered(7, true)
        let bits = RecoveredBits(bitmap, end: 15)  // ids from 15 on were recorded after the restart
        let r = LogReader.read(request(queue: 1, cursor: 1, from: LogPosition(segment: log.segments[0], offset: 0), maxBytes: 1 << 20, bits: bits), from: log.readableSegments())
        #expect(r.messages.map(\.id) == [1, 3, 7, 9, 11, 13, 15, 17, 19])
        #expect(r.messages.filter(\.delivered).map(\.id) == [7])
    }

    // MARK: Recovery

    @Test func recoveryLeavesAPageableQueuesBacklogOnDiskAndHonoursPurgesAndTransientFlags() throws {
        let dir = Self.freshDirectory("recovery")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let log = try SegmentLog(directory: dir, segmentBytes: 4096) { _, _ in }
            var w = RecordWriter()
            w.append(.queue(id: 1, name: "deep", options: QueueOptions(durable: true)))
            w.append(.queue(id: 2, name: "limited", options: QueueOptions(maxLength: 1000, durable: true)))
            for id in 1...60 {
                _ = Self.tail("m\(id)").withUnsafeBytes {
                    w.appendMessage(queue: id <= 50 ? 1 : 2, id: UInt64(id), delivered: false, transient: id == 30, expiresAtMillis: 0, tail: $0)
                }
            }
            w.append(.settled(queue: 1, ids: [1, 2]))
            w.append(.delivered(queue: 1, ids: [3]))
            w.append(.purged(queue: 1, from: 41, through: 50))
            for record in [w.take()] {
                var bytes = record
                try log.writeBatch(&bytes)
            }
            try log.sync()
        }
        let (_, recovered) = try RecoveredStore.open(directory: dir, segmentBytes: 4096)
        // "deep" pages: 3...40 but not 30 (transient), nothing in memory.
        let region = try #require(recovered.regions.first)
        #expect(recovered.regions.count == 1 && region.queue == 1)
        #expect(region.firstID == 3 && region.count == 37)
        // "limited" has a length limit: its messages are loaded.
        #expect(recovered.messages.map(\.id) == Array(51...60))
        let bits = try #require(recovered.bits)
        #expect(bits.isLive(3) && !bits.isLive(2) && !bits.isLive(30) && !bits.isLive(45) && bits.wasDelivered(3))
        #expect(bits.memoryBytes < 64)
    }

    // MARK: The core's rules

    func frames(_ b: MemoryBroker, _ s: ConnectionState) throws -> [Frame] {
        var out: [Frame] = []
        while let f = try b.nextFrame(for: s) { out.append(f) }
        return out
    }

    /// Every message record handed to the storage thread so far: (queue, id, transient, request, tail).
    func messageRecords(
        _ b: MemoryBroker, skipping failed: Set<UInt64> = []
    ) -> [(queue: UInt32, id: UInt64, transient: Bool, request: Bool, tail: [UInt8])] {
        var out: [(UInt32, UInt64, Bool, Bool, [UInt8])] = []
        for batch in b.persisted where !failed.contains(batch.number) {
            batch.bytes.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let length = Int(raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
                    let body = UnsafeRawBufferPointer(rebasing: raw[(offset + 8)..<(offset + 8 + length)])
                    if case .message(let q, let id, _, false, let transient, let request, _, let tail)? = StoreRecord.decode(body) {
                        out.append((q, id, transient, request, tail))
                    }
                    offset += 8 + length
                }
            }
        }
        return out
    }

    /// Answers every read the core asked for from the records handed over (as the reader would).
    func answerReads(_ b: MemoryBroker, skipping failed: Set<UInt64> = []) {
        for request in b.takeReadRequests() {
            var result = PageResult(request: request, next: LogPosition(segment: 1, offset: 0))
            var bytes = 0
            for r in messageRecords(b, skipping: failed) where r.queue == request.queueID && r.id >= request.cursor && r.id < request.stopBefore && bytes < request.maxBytes {
                result.messages.append(PagedMessage(id: r.id, delivered: false, transient: r.transient, isRequest: r.request, expiresAtMillis: 0, tail: r.tail))
                bytes += r.tail.count
            }
            b.pageIn(result)
        }
    }

    func pagingBroker(sync: SyncMode = .always) throws -> (MemoryBroker, ConnectionState) {
        var settings = CoreSettings()
        settings.durableQueueMemoryBytes = 4096
        let b = MemoryBroker(settings: settings, persisting: true, sync: sync)
        b.storageDone()
        let p = b.connect()
        b.send([.declareQueue(requestID: 1, name: "jobs", options: QueueOptions(durable: true))], from: p)
        guard case .queueOK = try frames(b, p).last else { throw TestSupportError("declare failed") }
        return (b, p)
    }

    func publish(_ b: MemoryBroker, _ p: ConnectionState, _ range: ClosedRange<Int>, persistent: Bool = true) {
        b.send(range.map { i in
            .publishTo(flags: PublishFlag.confirm, exchange: "", routingKey: "jobs",
                       properties: MessageProperties(persistent: persistent), payload: Array((String(repeating: "x", count: 90) + "\(i)").utf8))
        }, from: p)
    }

    func ready(_ b: MemoryBroker, _ p: ConnectionState) throws -> UInt32 {
        b.send([.topology(requestID: 9)], from: p)
        guard case .topologyReply(9, _, let queues)? = try frames(b, p).last else { return .max }
        return queues.first { $0.name == "jobs" }?.ready ?? .max
    }

    @Test func pastTheBudgetMessagesGoToDiskOnlyAndComeBackInOrderWhenAConsumerAsks() throws {
        let (b, p) = try pagingBroker()
        publish(b, p, 1...200)  // ~150 bytes each in memory: 4096 bytes hold about 27
        b.storageDone()
        _ = try frames(b, p)
        #expect(try ready(b, p) == 200)
        #expect(b.stat("store_paging_queues") == 1)
        let pagedOut = b.stat("store_paged_out")
        #expect(pagedOut > 150, "only \(pagedOut) paged out")
        #expect(b.readRequests.isEmpty, "read back with no consumer to take it")

        let c = b.connect()
        b.send([.consume(consumerID: 1, queue: "jobs", flags: 0, prefetch: 0)], from: c)
        var got: [String] = []
        for _ in 0..<100 {
            b.storageDone()  // the delivered records
            got += try frames(b, c).compactMap { if case .message(_, _, _, _, _, _, _, let body) = $0 { String(decoding: body.dropFirst(90), as: UTF8.self) } else { nil } }
            if b.readRequests.isEmpty && got.count == 200 { break }
            answerReads(b)
        }
        #expect(got == (1...200).map(String.init))
        #expect(b.stat("store_paging_queues") == 0)
        #expect(try ready(b, p) == 0)
    }

    @Test func aQueueWithAConsumerKeepsBackpressureInsteadOfPaging() throws {
        let (b, p) = try pagingBroker()
        let c = b.connect()
        b.send([.consume(consumerID: 1, queue: "jobs", flags: ConsumeFlag.manualAck, prefetch: 1)], from: c)
        publish(b, p, 1...200)  // the consumer takes one and never acks: 199 wait, in memory
        b.storageDone()
        #expect(b.stat("store_paged_out") == 0)
        #expect(b.stat("store_paging_queues") == 0)
        #expect(try ready(b, p) == 199)
        // Once it has gone, the backlog past the budget goes to disk (and the region, once
        // started, takes everything after it even with a consumer back).
        b.disconnect(c)
        publish(b, p, 201...260)
        b.storageDone()
        #expect(b.stat("store_paged_out") == 60)
        let again = b.connect()
        b.send([.consume(consumerID: 1, queue: "jobs", flags: ConsumeFlag.manualAck, prefetch: 1)], from: again)
        publish(b, p, 261...270)
        #expect(b.stat("store_paged_out") == 70)
    }

    @Test func aPagedOutMessageIsConfirmedOnlyOnceSyncedEvenWithIntervalSync() throws {
        let (b, p) = try pagingBroker(sync: .interval(milliseconds: 100))
        publish(b, p, 1...10)
        let early = try frames(b, p).compactMap { if case .confirm(let s, _) = $0 { s } else { nil } }
        #expect(early == [10], "in memory: confirmed at once in interval mode")
        publish(b, p, 11...100)  // past the budget: these exist only in the log
        #expect(try frames(b, p).allSatisfy { if case .confirm = $0 { false } else { true } }, "confirmed before the sync")
        b.storageDone()
        let late = try frames(b, p).compactMap { if case .confirm(let s, let f) = $0 { f & AckFlag.nack == 0 ? s : nil } else { nil } }
        #expect(late.last == 100)
    }

    @Test func aFailedBatchNacksItsPagedOutMessagesAndTheRegionForgetsThem() throws {
        let (b, p) = try pagingBroker()
        publish(b, p, 1...100)
        b.storageDone()
        let before = try ready(b, p)
        #expect(before == 100)
        let failing = b.persisted.count
        publish(b, p, 101...150)
        b.storageDone(failing: true)
        let nacks = try frames(b, p).filter { if case .confirm(_, let f) = $0 { f & AckFlag.nack != 0 } else { false } }
        #expect(nacks.count == 50)
        #expect(try ready(b, p) == 100, "the region still counts messages that never reached the disk")
        // Everything that did reach the disk comes back; nothing of the failed batches is waited for.
        let failed = Set(b.persisted.dropFirst(failing).map(\.number))
        b.advance(by: .seconds(2))
        b.storageDone()  // the probe succeeds: healthy again
        let c = b.connect()
        b.send([.consume(consumerID: 1, queue: "jobs", flags: 0, prefetch: 0)], from: c)
        var got = 0
        for _ in 0..<100 {
            b.storageDone()
            got += try frames(b, c).filter { if case .message = $0 { true } else { false } }.count
            if b.readRequests.isEmpty { break }
            answerReads(b, skipping: failed)
        }
        #expect(got == 100)
        #expect(b.stat("store_paging_queues") == 0)
    }
}
