import Glibc

/// The append-only log under a data directory: records in numbered segment files
/// (`00000001.seg`, `00000002.seg`, ...), each framed by `LogFormat` with a length and a CRC-32C.
///
/// Opening it recovers: every intact record of every segment is handed to `replay` in order; a
/// torn tail of the newest segment (a write a crash interrupted) is cut at the first bad record;
/// damage elsewhere is skipped up to the next intact record. It never refuses to open over damage:
/// `recovery` says what was cut and skipped.
///
/// Not thread-safe: one owner (the storage thread) uses it. `write(framed:)` writes a batch of
/// records and `sync` makes everything written durable with one `fdatasync` (group commit is the
/// caller's batching); `append` and `commit` do both for one record at a time (tests, tools).
public final class SegmentLog {
    /// What opening the log found.
    public struct Recovery: Sendable, Equatable {
        public var segments = 0
        public var records = 0
        /// Bytes of a torn tail cut off the newest segment.
        public var truncatedBytes = 0
        /// Bytes of damage skipped inside segments (records lost there).
        public var skippedBytes = 0
        /// One line per thing cut or skipped, for the broker's log.
        public var notes: [String] = []
    }

    public let directory: String
    public let segmentBytes: Int
    public private(set) var recovery = Recovery()
    /// Segment numbers, oldest first; the last is the one appended to.
    public private(set) var segments: [UInt64] = []
    private var fd: Int32 = -1
    /// Bytes of the current segment known to be written and synced, and written (maybe not synced).
    private var durableSize = 0
    private var writtenSize = 0
    /// Sizes of the segments before the current one, and their sum.
    private var closedSizes: [UInt64: Int] = [:]
    private var closedBytes = 0
    private var pending: [UInt8] = []
    public private(set) var syncs: UInt64 = 0

    /// Opens (creating if needed) the log in `directory` and replays it.
    public init(
        directory: String, segmentBytes: Int = 64 << 20, replay: (UnsafeRawBufferPointer, UInt64) -> Void
    ) throws(StoreError) {
        self.directory = directory
        self.segmentBytes = segmentBytes
        try Self.makeDirectory(directory)
        let found = try Self.segmentNumbers(in: directory)
        for (i, number) in found.enumerated() {
            try recover(number, isNewest: i == found.count - 1, replay: replay)
        }
        segments = found
        if let newest = found.last {
            try openForAppend(newest)
        } else {
            try startSegment(1)
        }
    }

    deinit { if fd >= 0 { close(fd) } }

    public func path(of segment: UInt64) -> String {
        var digits = String(segment)
        while digits.count < 8 { digits = "0" + digits }
        return directory + "/" + digits + ".seg"
    }

    /// The segment new records go to.
    public var currentSegment: UInt64 { segments.last ?? 0 }

    // MARK: Writing

    /// Buffers one record (written and synced by the next `commit`).
    public func append(_ body: UnsafeRawBufferPointer) {
        LogFormat.append(body, to: &pending)
    }

    public func append(_ body: [UInt8]) { body.withUnsafeBytes { append($0) } }

    /// Writes every buffered record and syncs them with one `fdatasync`. On failure the segment is
    /// cut back to what was durable before, so no partial record is left for later appends to
    /// follow, and the buffered records are dropped (their writers are told it failed).
    public func commit() throws(StoreError) {
        guard !pending.isEmpty else { return }
        defer { pending.removeAll(keepingCapacity: pending.count <= 1 << 20) }
        if writtenSize >= segmentBytes { try roll() }
        try writeAll(pending)
        try sync()
    }

    /// Writes records framed by `RecordWriter` (checksum slots zero), filling in each checksum
    /// first. Not synced: `sync` does that. On failure the segment is cut back to where this write
    /// began, so the next write does not follow a partial record.
    public func writeBatch(_ bytes: inout [UInt8]) throws(StoreError) {
        bytes.withUnsafeMutableBytes { LogFormat.fillChecksums($0) }
        try writeAll(bytes)
    }

    private func writeAll(_ bytes: [UInt8]) throws(StoreError) {
        let errorNumber: Int32? = bytes.withUnsafeBytes { raw in
            var written = 0
            while written < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + written, raw.count - written)
                if n < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                written += n
            }
            return nil
        }
        if let errorNumber {
            cutBack(to: writtenSize)
            throw StoreError("write", path: path(of: currentSegment), errno: errorNumber)
        }
        writtenSize += bytes.count
    }

    /// Makes everything written so far durable with one `fdatasync`. On failure what was written
    /// since the last sync is in an unknown state (Linux may have dropped the dirty pages), so the
    /// segment is cut back to what the last sync covered and the caller fails those records.
    public func sync() throws(StoreError) {
        guard writtenSize > durableSize else { return }
        guard fdatasync(fd) == 0 else {
            let e = StoreError("fdatasync", path: path(of: currentSegment), errno: errno)
            cutBack(to: durableSize)
            throw e
        }
        syncs += 1
        durableSize = writtenSize
    }

    /// For syncing on another thread: a duplicate of the current segment's descriptor (the caller
    /// closes it; it stays valid if the log moves on to a new segment meanwhile) and how much had
    /// been written to it. After `fdatasync` on it, `markDurable` records the result.
    func syncPoint() -> (fd: Int32, segment: UInt64, size: Int)? {
        guard writtenSize > durableSize else { return nil }
        let copy = dup(fd)
        return copy < 0 ? nil : (copy, currentSegment, writtenSize)
    }

    /// An `fdatasync` taken at `syncPoint` succeeded.
    func markDurable(segment: UInt64, size: Int) {
        guard segment == currentSegment else { return }  // rolling synced that segment already
        syncs += 1
        durableSize = max(durableSize, size)
    }

    /// An `fdatasync` failed: what was written since the last good one is cut off (it may be lost).
    func syncFailed(segment: UInt64) {
        guard segment == currentSegment else { return }
        cutBack(to: durableSize)
    }

    /// Syncs the current segment and starts the next one.
    public func roll() throws(StoreError) {
        try sync()
        try startSegment(currentSegment + 1)
    }

    private func cutBack(to size: Int) {
        _ = ftruncate(fd, off_t(size))
        _ = lseek(fd, off_t(size), SEEK_SET)
        writtenSize = size
        durableSize = min(durableSize, size)
    }

    /// Every segment as far as it is synced, oldest first: what a read may see (closed segments
    /// were synced when the log rolled past them).
    func readableSegments() -> [ReadableSegment] {
        segments.map { n in
            ReadableSegment(number: n, path: path(of: n), limit: n == currentSegment ? durableSize : closedSizes[n] ?? 0)
        }
    }

    /// Bytes in every segment file: kept as segments come and go (the storage threads report it
    /// with every batch, so it must not cost a `stat` per segment each time).
    public func bytesOnDisk() -> UInt64 { UInt64(closedBytes + writtenSize) }

    /// Deletes a segment whose records are all settled (never the current one).
    public func delete(segment: UInt64) throws(StoreError) {
        guard segment != currentSegment, let i = segments.firstIndex(of: segment) else { return }
        let path = self.path(of: segment)
        guard unlink(path) == 0 || errno == ENOENT else { throw StoreError("unlink", path: path, errno: errno) }
        segments.remove(at: i)
        closedBytes -= closedSizes.removeValue(forKey: segment) ?? 0
        try Self.syncDirectory(directory)
    }

    // MARK: Files

    private func startSegment(_ number: UInt64) throws(StoreError) {
        let path = self.path(of: number)
        let newFD = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard newFD >= 0 else { throw StoreError("open", path: path, errno: errno) }
        let ok = LogFormat.header.withUnsafeBytes { Glibc.write(newFD, $0.baseAddress, $0.count) == $0.count }
        guard ok, fdatasync(newFD) == 0 else {
            let e = StoreError("write", path: path, errno: errno)
            close(newFD)
            unlink(path)
            throw e
        }
        try Self.syncDirectory(directory)
        if fd >= 0 {
            close(fd)
            closedSizes[currentSegment] = writtenSize
            closedBytes += writtenSize
        }
        fd = newFD
        durableSize = LogFormat.header.count
        writtenSize = durableSize
        segments.append(number)
    }

    private func openForAppend(_ number: UInt64) throws(StoreError) {
        let path = self.path(of: number)
        fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw StoreError("open", path: path, errno: errno) }
        let end = lseek(fd, 0, SEEK_END)
        guard end >= 0 else { throw StoreError("lseek", path: path, errno: errno) }
        durableSize = Int(end)
        writtenSize = durableSize
        // The older segments are closed: their sizes as recovery left them.
        for n in segments where n != number {
            var info = stat()
            guard stat(self.path(of: n), &info) == 0 else { continue }
            closedSizes[n] = Int(info.st_size)
            closedBytes += Int(info.st_size)
        }
    }

    /// Replays one segment, cutting a torn tail (newest segment) or skipping damage.
    private func recover(_ number: UInt64, isNewest: Bool, replay: (UnsafeRawBufferPointer, UInt64) -> Void) throws(StoreError) {
        let path = self.path(of: number)
        let bytes = try Self.readFile(path)
        recovery.segments += 1
        if bytes.count < LogFormat.header.count || Array(bytes[0..<LogFormat.header.count]) != LogFormat.header {
            // A segment cut before its header was synced (crash right after creation), or not ours.
            recovery.notes.append("\(path): no valid segment header; \(bytes.count) bytes ignored")
            recovery.skippedBytes += bytes.count
            if isNewest { try Self.rewrite(path, with: LogFormat.header) }
            return
        }
        var cutAt: Int?
        bytes.withUnsafeBytes { raw in
            var offset = LogFormat.header.count
            while offset < raw.count {
                if let (body, end) = LogFormat.record(in: raw, at: offset) {
                    replay(body, number)
                    recovery.records += 1
                    offset = end
                    continue
                }
                // Damage, or the end of what was written. An intact record further on means damage
                // in the middle: skip to it. None means the tail is torn (or zero-filled).
                if let next = Self.nextIntactRecord(in: raw, after: offset) {
                    recovery.skippedBytes += next - offset
                    recovery.notes.append("\(path): \(next - offset) damaged bytes at offset \(offset) skipped (records there are lost)")
                    offset = next
                    continue
                }
                let rest = raw.count - offset
                if isNewest {
                    cutAt = offset
                    recovery.truncatedBytes += rest
                    recovery.notes.append("\(path): torn tail of \(rest) bytes at offset \(offset) cut")
                } else {
                    recovery.skippedBytes += rest
                    recovery.notes.append("\(path): \(rest) unreadable bytes at its end skipped")
                }
                break
            }
        }
        if let cutAt {
            guard truncate(path, off_t(cutAt)) == 0 else { throw StoreError("truncate", path: path, errno: errno) }
        }
    }

    private static func nextIntactRecord(in raw: UnsafeRawBufferPointer, after offset: Int) -> Int? {
        var q = offset + 1
        while q + LogFormat.recordHeaderSize < raw.count {
            if LogFormat.record(in: raw, at: q) != nil { return q }
            q += 1
        }
        return nil
    }

    // MARK: Directory helpers

    static func makeDirectory(_ path: String) throws(StoreError) {
        var current = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            current += "/" + part
            if mkdir(current, 0o700) != 0 && errno != EEXIST { throw StoreError("mkdir", path: current, errno: errno) }
        }
        var info = stat()
        guard stat(path, &info) == 0 else { throw StoreError("stat", path: path, errno: errno) }
        guard info.st_mode & S_IFMT == S_IFDIR else { throw StoreError("open", path: path, errno: ENOTDIR) }
    }

    static func segmentNumbers(in directory: String) throws(StoreError) -> [UInt64] {
        guard let dir = opendir(directory) else { throw StoreError("opendir", path: directory, errno: errno) }
        defer { closedir(dir) }
        var numbers: [UInt64] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard name.hasSuffix(".seg"), let n = UInt64(name.dropLast(4)), n > 0 else { continue }
            numbers.append(n)
        }
        return numbers.sorted()
    }

    static func readFile(_ path: String) throws(StoreError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw StoreError("open", path: path, errno: errno) }
        defer { close(fd) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw StoreError("read", path: path, errno: errno)
            }
            if n == 0 { return out }
            out.append(contentsOf: chunk[0..<n])
        }
    }

    static func rewrite(_ path: String, with bytes: [UInt8]) throws(StoreError) {
        let fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC)
        guard fd >= 0 else { throw StoreError("open", path: path, errno: errno) }
        defer { close(fd) }
        let ok = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) == $0.count }
        guard ok, fdatasync(fd) == 0 else { throw StoreError("write", path: path, errno: errno) }
    }

    static func syncDirectory(_ path: String) throws(StoreError) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw StoreError("open", path: path, errno: errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw StoreError("fsync", path: path, errno: errno) }
    }
}
