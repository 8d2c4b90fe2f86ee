@testable import EvbusBroker
import EvbusTestSupport
import Foundation
import Synchronization
import Testing

/// The persistence log on real files: replay across reopening, torn tails, damage in the middle,
/// segments, group commit, and a disk that fills up (a real, small tmpfs).
@Suite(.serialized) struct StoreTests {
    static func freshDirectory(_ tag: String) -> String {
        TestPaths.dataDirectory("store-\(tag)")
    }

    func record(_ i: Int, size: Int = 40) -> [UInt8] {
        var r = Array("record \(i) ".utf8)
        while r.count < size { r.append(UInt8(truncatingIfNeeded: i &* 31 &+ r.count)) }
        return r
    }

    /// Opens the log in `dir` and returns what it replayed.
    func replayed(_ dir: String, segmentBytes: Int = 64 << 20) throws -> (records: [[UInt8]], log: SegmentLog) {
        var out: [[UInt8]] = []
        let log = try SegmentLog(directory: dir, segmentBytes: segmentBytes) { body, _ in out.append(Array(body)) }
        return (out, log)
    }

    @Test func theChecksumIsCRC32C() {
        // The standard check values (RFC 3720 appendix B.4 and the CRC catalogue).
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
        #expect(CRC32C.checksum(Array(0...31)) == 0x46DD_794E)
        // Every length and alignment agrees with the byte-at-a-time definition.
        let data = (0..<300).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        for start in 0..<9 {
            for end in stride(from: start, through: data.count, by: 13) {
                var crc: UInt32 = 0xFFFF_FFFF
                for b in data[start..<end] {
                    crc ^= UInt32(b)
                    for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
                }
                #expect(CRC32C.checksum(Array(data[start..<end])) == crc ^ 0xFFFF_FFFF)
            }
        }
    }

    @Test func recordsSurviveReopeningInOrder() throws {
        let dir = Self.freshDirectory("reopen")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let (none, log) = try replayed(dir)
            #expect(none.isEmpty)
            for i in 0..<100 { log.append(record(i)) }
            try log.commit()
            #expect(log.syncs == 1, "one sync for the whole batch")
        }
        let (records, log) = try replayed(dir)
        #expect(records == (0..<100).map { record($0) })
        #expect(log.recovery.records == 100 && log.recovery.notes.isEmpty)
    }

    @Test func aTornTailIsCutAtEveryOffsetAndAppendingGoesOn() throws {
        let dir = Self.freshDirectory("torn")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let segment: String
        let fullSize: Int
        do {
            let (_, log) = try replayed(dir)
            for i in 0..<3 { log.append(record(i)) }
            try log.commit()
            segment = log.path(of: log.currentSegment)
        }
        let original = try Data(contentsOf: URL(fileURLWithPath: segment))
        fullSize = original.count
        let lastRecordStart = fullSize - (LogFormat.recordHeaderSize + 40)
        for cut in lastRecordStart..<fullSize {
            try original.prefix(cut).write(to: URL(fileURLWithPath: segment))
            let (records, log) = try replayed(dir)
            #expect(records == [record(0), record(1)], "cut at \(cut)")
            #expect(log.recovery.truncatedBytes == cut - lastRecordStart)
            // The cut leaves a clean end: a new record follows the intact ones.
            log.append(record(9))
            try log.commit()
            let (again, _) = try replayed(dir)
            #expect(again == [record(0), record(1), record(9)], "append after a cut at \(cut)")
        }
    }

    @Test func damageInTheMiddleLosesOnlyTheDamagedRecord() throws {
        let dir = Self.freshDirectory("flip")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let segment: String
        do {
            let (_, log) = try replayed(dir)
            for i in 0..<5 { log.append(record(i)) }
            try log.commit()
            segment = log.path(of: log.currentSegment)
        }
        var bytes = try Data(contentsOf: URL(fileURLWithPath: segment))
        // A byte inside the third record's body.
        let third = LogFormat.header.count + 2 * (LogFormat.recordHeaderSize + 40) + LogFormat.recordHeaderSize + 10
        bytes[third] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: segment))
        let (records, log) = try replayed(dir)
        #expect(records == [record(0), record(1), record(3), record(4)])
        #expect(log.recovery.skippedBytes == LogFormat.recordHeaderSize + 40)
        #expect(log.recovery.notes.count == 1)
    }

    @Test func aSegmentWithoutItsHeaderNeverStopsTheLogFromOpening() throws {
        let dir = Self.freshDirectory("header")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let (_, log) = try replayed(dir)
            log.append(record(1))
            try log.commit()
        }
        // A newer segment that a crash left empty (created, header never synced).
        #expect(FileManager.default.createFile(atPath: dir + "/00000002.seg", contents: Data()))
        let (records, log) = try replayed(dir)
        #expect(records == [record(1)])
        log.append(record(2))
        try log.commit()
        #expect(try replayed(dir).records == [record(1), record(2)])
    }

    @Test func segmentsRollAndSettledOnesAreDeleted() throws {
        let dir = Self.freshDirectory("roll")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (_, log) = try replayed(dir, segmentBytes: 200)
        for i in 0..<12 {
            log.append(record(i))
            try log.commit()
        }
        #expect(log.segments.count > 2)
        let oldest = log.segments[0]
        var inOldest = 0
        _ = try SegmentLog(directory: dir, segmentBytes: 200) { _, segment in if segment == oldest { inOldest += 1 } }
        func filesBytes() throws -> UInt64 {
            try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".seg") }.reduce(0) {
                $0 + ((try FileManager.default.attributesOfItem(atPath: dir + "/" + $1)[.size] as? UInt64) ?? 0)
            }
        }
        #expect(log.bytesOnDisk() == (try filesBytes()))
        try log.delete(segment: oldest)
        #expect(log.bytesOnDisk() == (try filesBytes()))
        let (records, reopened) = try replayed(dir, segmentBytes: 200)
        #expect(reopened.bytesOnDisk() == (try filesBytes()))
        #expect(records == (inOldest..<12).map { record($0) })
        #expect(!reopened.segments.contains(oldest))
    }

    /// A batch of one record, framed as the core frames them (checksum slot left zero).
    func batch(_ number: UInt64, _ body: [UInt8]) -> StoreBatch {
        var bytes: [UInt8] = []
        withUnsafeBytes(of: UInt32(body.count).littleEndian) { bytes.append(contentsOf: $0) }
        bytes += [0, 0, 0, 0] + body
        return StoreBatch(number: number, bytes: bytes)
    }

    @Test func groupCommitMakesOneSyncCoverManyBatches() throws {
        let dir = Self.freshDirectory("group")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let reports = Mutex<(written: UInt64, synced: UInt64, failed: Int, placedInOrder: Bool, lastPlaced: UInt64)>((0, 0, 0, true, 0))
        let storage = StorageThread(log: try replayed(dir).log) { p in
            reports.withLock { r in
                // Reported progress only moves forward, synced never ahead of written.
                if p.written < r.written || p.synced < r.synced || p.synced > p.written { r.placedInOrder = false }
                r.written = p.written
                r.synced = p.synced
                r.failed += p.failed.count
                for placed in p.placed {
                    if placed.batch != r.lastPlaced + 1 { r.placedInOrder = false }
                    r.lastPlaced = placed.batch
                }
            }
        }
        for i in 1...4000 { storage.submit(batch(UInt64(i), record(i))) }
        #expect(blockUntil { reports.withLock { $0.synced } == 4000 })
        storage.stop()
        let r = reports.withLock { $0 }
        #expect(r.failed == 0)
        #expect(r.placedInOrder)
        #expect(storage.batches == 4000)
        #expect(storage.syncs < storage.batches, "\(storage.syncs) syncs for \(storage.batches) batches")
        let (records, _) = try replayed(dir)
        // Checksums were filled in by the storage thread: every record replays, in order.
        #expect(records == (1...4000).map { record($0) })
    }

    @Test func intervalSyncingWritesAtOnceAndSyncsOnItsTimer() throws {
        let dir = Self.freshDirectory("interval")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let seen = Mutex<(written: UInt64, synced: UInt64)>((0, 0))
        let storage = StorageThread(log: try replayed(dir).log, sync: .interval(milliseconds: 50)) { p in
            seen.withLock { $0 = (max($0.written, p.written), max($0.synced, p.synced)) }
        }
        for i in 1...200 { storage.submit(batch(UInt64(i), record(i))) }
        #expect(blockUntil { seen.withLock { $0.written } == 200 })
        // Synced within a few intervals, with far fewer syncs than batches.
        #expect(blockUntil { seen.withLock { $0.synced } == 200 })
        #expect(storage.syncs <= 10, "\(storage.syncs) syncs for 200 batches at a 50 ms interval")
        storage.stop()
        #expect(try replayed(dir).records == (1...200).map { record($0) })
    }

    @Test func aFullDiskRefusesTheBatchDamagesNothingAndRecoversWhenSpaceReturns() async throws {
        try #require(getuid() == 0, "mounting the small filesystem needs root (CI runs as root)")
        let fs = try await SmallFilesystem(size: "256k", tag: "full")
        defer { fs.unmount() }
        let mountPoint = fs.path
        // Room to give back later.
        let filler = mountPoint + "/filler"
        try Data(count: 64 << 10).write(to: URL(fileURLWithPath: filler))
        let dir = mountPoint + "/data"
        let (_, log) = try replayed(dir)
        var committed = 0
        var failure: StoreError?
        for i in 0..<100 {
            log.append(record(i, size: 16 << 10))
            do {
                try log.commit()
                committed += 1
            } catch {
                failure = error
                break
            }
        }
        #expect(failure?.isDiskFull == true, "expected ENOSPC, got \(String(describing: failure))")
        #expect(committed > 0)
        // What was committed before the disk filled is intact, and nothing half-written follows it.
        let (before, check) = try replayed(dir)
        #expect(before == (0..<committed).map { record($0, size: 16 << 10) })
        #expect(check.recovery.notes.isEmpty, "a failed write must leave no partial record: \(check.recovery.notes)")
        // Space returns: the same log persists again.
        try FileManager.default.removeItem(atPath: filler)
        log.append(record(500, size: 16 << 10))
        try log.commit()
        let (after, recheck) = try replayed(dir)
        #expect(recheck.recovery.notes.isEmpty)
        #expect(after == (0..<committed).map { record($0, size: 16 << 10) } + [record(500, size: 16 << 10)])
    }
}
