import Glibc

/// A place in the log: a segment and a byte offset in it (at or before its header: its first record).
public struct LogPosition: Sendable, Equatable {
    public var segment: UInt64
    public var offset: Int
    public init(segment: UInt64, offset: Int) {
        self.segment = segment
        self.offset = offset
    }
}

/// A segment as far as it may be read: everything up to `limit` is synced, so a failed sync can
/// never cut back what a read has already handed out.
public struct ReadableSegment: Sendable, Equatable {
    public var number: UInt64
    public var path: String
    public var limit: Int
}

/// What recovery found live among the ids it replayed: reads of a queue's paged-out messages skip
/// the ids below `end` that are not live (settled before the restart, or of a deleted queue) and
/// flag the delivered ones redelivered. Ids at or above `end` were recorded since the restart.
/// Immutable once built, so the core and the reader share it.
public final class RecoveredBits: Sendable {
    public let base: UInt64
    public let end: UInt64
    private let live: [UInt64]
    private let delivered: [UInt64]

    init(_ bitmap: IDBitmap, end: UInt64) {
        base = bitmap.base
        self.end = end
        live = bitmap.live
        delivered = bitmap.delivered
    }

    /// Whether a message record with this id is still to be delivered.
    public func isLive(_ id: UInt64) -> Bool {
        guard id < end else { return true }
        return IDBitmap.test(live, base: base, id)
    }

    public func wasDelivered(_ id: UInt64) -> Bool {
        id < end && IDBitmap.test(delivered, base: base, id)
    }

    /// Bytes the two bitmaps take (what a recovered backlog costs in memory: two bits a message).
    public var memoryBytes: Int { (live.count + delivered.count) * 8 }
}

/// Two bits per message id while recovery replays: live (recorded, not yet settled) and delivered.
struct IDBitmap {
    private(set) var base: UInt64 = 0
    private(set) var live: [UInt64] = []
    private(set) var delivered: [UInt64] = []

    static func test(_ words: [UInt64], base: UInt64, _ id: UInt64) -> Bool {
        guard id >= base else { return false }
        let i = Int((id - base) >> 6)
        return i < words.count && words[i] & (1 << ((id - base) & 63)) != 0
    }

    func isLive(_ id: UInt64) -> Bool { Self.test(live, base: base, id) }
    func isDelivered(_ id: UInt64) -> Bool { Self.test(delivered, base: base, id) }

    mutating func setLive(_ id: UInt64, _ on: Bool) {
        guard let (i, bit) = slot(id, growing: on) else { return }
        if on { live[i] |= bit } else { live[i] &= ~bit }
    }

    mutating func setDelivered(_ id: UInt64, _ on: Bool) {
        guard let (i, bit) = slot(id, growing: on) else { return }
        if on { delivered[i] |= bit } else { delivered[i] &= ~bit }
    }

    /// The word and bit of `id`, growing both maps to hold it when `growing` (else nil if outside).
    private mutating func slot(_ id: UInt64, growing: Bool) -> (Int, UInt64)? {
        if live.isEmpty {
            guard growing else { return nil }
            base = id & ~63
        }
        if id < base {
            guard growing else { return nil }
            // Ids arrive in order except compaction's copies: rare, so growing downwards may copy.
            let newBase = id & ~63
            let extra = Int((base - newBase) >> 6)
            live.insert(contentsOf: repeatElement(0, count: extra), at: 0)
            delivered.insert(contentsOf: repeatElement(0, count: extra), at: 0)
            base = newBase
        }
        let i = Int((id - base) >> 6)
        if i >= live.count {
            guard growing else { return nil }
            let more = i + 1 - live.count
            live.append(contentsOf: repeatElement(0, count: more))
            delivered.append(contentsOf: repeatElement(0, count: more))
        }
        return (i, 1 << ((id - base) & 63))
    }
}

/// A request to read a queue's paged-out messages back (docs/DURABILITY.md §4): the message records
/// of queue `queueID` with ids from `cursor` on and below `stopBefore` (those the broker still
/// holds in memory), read from `from` onwards until about `maxBytes` of them are found or the
/// synced end of the log is reached.
public struct PageRequest: Sendable {
    public var queueSlot: UInt32
    public var queueID: UInt32
    /// Which paging episode of the queue asked (a purge or a new episode makes old answers stale).
    public var generation: UInt64
    public var cursor: UInt64
    public var stopBefore: UInt64 = .max
    public var from: LogPosition
    public var maxBytes: Int
    public var bits: RecoveredBits?
}

/// One message read back.
public struct PagedMessage: Sendable {
    public var id: UInt64
    public var delivered: Bool
    public var transient: Bool
    public var isRequest: Bool
    public var expiresAtMillis: UInt64
    public var tail: [UInt8]
}

/// What a read found, in id order, and where the next read of the same queue goes on from.
public struct PageResult: Sendable {
    public var request: PageRequest
    public var messages: [PagedMessage] = []
    public var next: LogPosition
    public var error: StoreError?
}

/// Reads records back from segment files, off the broker's loop (the storage thread's reader).
enum LogReader {
    /// Reads the messages `request` asks for from `segments` (oldest first).
    static func read(_ request: PageRequest, from segments: [ReadableSegment]) -> PageResult {
        var result = PageResult(request: request, next: request.from)
        var taken = 0
        for segment in segments where segment.number >= request.from.segment {
            let start = segment.number == request.from.segment ? request.from.offset : 0
            var full = false
            do throws(StoreError) {
                try forEachRecord(path: segment.path, from: start, limit: segment.limit) { body, end in
                    if let m = match(body, request) {
                        if m.id >= request.stopBefore {
                            // Held in memory: stop here, so a later read starts at this record.
                            result.next = LogPosition(segment: segment.number, offset: end - LogFormat.recordHeaderSize - body.count)
                            full = true
                            return false
                        }
                        taken += m.tail.count
                        result.messages.append(m)
                    }
                    result.next = LogPosition(segment: segment.number, offset: end)
                    full = taken >= request.maxBytes
                    return !full
                }
            } catch {
                result.error = error
                return result
            }
            if full { break }
            result.next = LogPosition(segment: segment.number, offset: max(segment.limit, start))
        }
        return result
    }

    /// The message in `body` if it is one `request` wants: its queue's, from the cursor on, not a
    /// compaction copy (those are of messages held in memory), live after recovery.
    private static func match(_ body: UnsafeRawBufferPointer, _ request: PageRequest) -> PagedMessage? {
        guard body.count >= 22, body[0] == StoreRecord.Kind.message.rawValue,
            UInt32(littleEndian: body.loadUnaligned(fromByteOffset: 1, as: UInt32.self)) == request.queueID
        else { return nil }
        let id = UInt64(littleEndian: body.loadUnaligned(fromByteOffset: 5, as: UInt64.self))
        let flags = body[13]
        guard id >= request.cursor, flags & StoreRecord.MessageFlag.moved == 0 else { return nil }
        if let bits = request.bits, !bits.isLive(id) { return nil }
        return PagedMessage(
            id: id, delivered: flags & StoreRecord.MessageFlag.delivered != 0 || request.bits?.wasDelivered(id) == true,
            transient: flags & StoreRecord.MessageFlag.transient != 0, isRequest: flags & StoreRecord.MessageFlag.request != 0,
            expiresAtMillis: UInt64(littleEndian: body.loadUnaligned(fromByteOffset: 14, as: UInt64.self)),
            tail: Array(body[22...]))
    }

    /// Calls `body` with each intact record of the file between `from` and `limit` and the offset
    /// where it ends, until it returns false. Damage is skipped byte by byte to the next intact
    /// record (recovery has already logged it).
    static func forEachRecord(
        path: String, from: Int, limit: Int, _ body: (UnsafeRawBufferPointer, Int) -> Bool
    ) throws(StoreError) {
        var position = max(from, LogFormat.header.count)
        guard position < limit else { return }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw StoreError("open", path: path, errno: errno) }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while position < limit {
            let n = min(buffer.count, limit - position)
            let got = buffer.withUnsafeMutableBytes { readFully(fd, $0.baseAddress!, n, at: position) }
            guard got == n else { throw StoreError("read", path: path, errno: got < 0 ? errno : EIO) }
            var offset = 0
            var need = 0  // a record longer than the buffer starts at `offset`
            let stop = buffer.withUnsafeBytes { whole -> Bool in
                let raw = UnsafeRawBufferPointer(rebasing: whole[0..<n])
                while offset < n {
                    if let (record, end) = LogFormat.record(in: raw, at: offset) {
                        if !body(record, position + end) { return true }
                        offset = end
                        continue
                    }
                    // Cut off by the buffer's end (read again from here), or damage (skip a byte).
                    if n - offset < LogFormat.recordHeaderSize {
                        if position + n < limit { break }
                    } else {
                        let length = Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
                        let size = LogFormat.recordHeaderSize + length
                        if length > 0 && length <= LogFormat.maxBody && offset + size > n && position + offset + size <= limit {
                            if offset == 0 { need = size }
                            break
                        }
                    }
                    offset += 1
                }
                return false
            }
            if stop { return }
            if need > buffer.count { buffer = [UInt8](repeating: 0, count: need) }
            position += offset
        }
    }

    private static func readFully(_ fd: Int32, _ into: UnsafeMutableRawPointer, _ count: Int, at offset: Int) -> Int {
        var done = 0
        while done < count {
            let r = pread(fd, into + done, count - done, off_t(offset + done))
            if r < 0 {
                if errno == EINTR { continue }
                return -1
            }
            if r == 0 { break }
            done += r
        }
        return done
    }
}
