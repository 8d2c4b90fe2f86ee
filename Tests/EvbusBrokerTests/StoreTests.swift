@testable import EvbusBroker
import EvbusTestSupport
import Foundation
import Synchronization
import Testing

/// The persistence log on real files: replay across reopening, torn tails, damage in the middle,
/// segments, group commit, and a disk that fills up (a real, small tmpfs).
@Suite(.serialized) struct StoreTests {
    static func freshDirectory(_ tag: String) -> String {
        let path = "/tmp/evbus-store-\(getpid())-\(tag)-\(UInt32.random(in: 0...UInt32.max))"
        try? FileManager.default.removeItem(atPath: path)
        return path
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
        try log.delete(segment: oldest)
        let (records, reopened) = try replayed(dir, segmentBytes: 200)
        #expect(records == (inOldest..<12).map { record($0) })
        #expect(!reopened.segments.contains(oldest))
    }

    @Test func groupCommitMakesOneSyncCoverManyRecords() throws {
        let dir = Self.freshDirectory("group")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let storage = StorageThread(log: try replayed(dir).log)
        let done = Atomic<Int>(0)
        let failed = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 8) { t in
            for i in 0..<500 {
                storage.submit(record(t * 1000 + i)) { result in
                    if case .failure = result { failed.add(1, ordering: .relaxed) }
                    done.add(1, ordering: .relaxed)
                }
            }
        }
        #expect(blockUntil { done.load(ordering: .relaxed) == 4000 })
        storage.stop()
        #expect(failed.load(ordering: .relaxed) == 0)
        #expect(storage.records == 4000)
        #expect(storage.syncs < storage.records, "\(storage.syncs) syncs for \(storage.records) records")
        let (records, _) = try replayed(dir)
        #expect(records.count == 4000)
        // Each writer's records are on disk in the order it submitted them.
        let numbers = records.map { r in Int(String(decoding: r, as: UTF8.self).split(separator: " ")[1])! }
        for t in 0..<8 {
            #expect(numbers.filter { $0 / 1000 == t } == Array((t * 1000)..<(t * 1000 + 500)))
        }
    }

    @Test func aFullDiskRefusesTheBatchDamagesNothingAndRecoversWhenSpaceReturns() async throws {
        try #require(getuid() == 0, "mounting the small filesystem needs root (CI runs as root)")
        let mountPoint = Self.freshDirectory("full")
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: mountPoint) }
        let mount = try RunningProcess("/bin/mount", ["-t", "tmpfs", "-o", "size=256k", "tmpfs", mountPoint])
        try #require(await mount.waitForExit() == 0, "mount failed: \(mount.stderr)")
        defer { umount(mountPoint) }
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
