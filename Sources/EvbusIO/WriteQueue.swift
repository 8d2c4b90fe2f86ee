import CEvbusLinux
import Glibc

/// Bytes waiting to be written to one socket: a list of heap chunks, flushed many frames per `sendmsg`.
///
/// Frames are encoded straight into the tail chunk (`reserve` then `commit`), so nothing is copied twice.
/// A drained queue frees its chunks, so an idle connection holds no write memory at all.
public struct WriteQueue: ~Copyable {
    @usableFromInline
    struct Chunk {
        @usableFromInline var base: UnsafeMutableRawPointer
        @usableFromInline var capacity: Int
        @usableFromInline var start: Int
        @usableFromInline var end: Int
    }

    /// The size of an ordinary chunk; a larger frame gets a chunk of its own size.
    public static let chunkSize = 64 * 1024
    /// The size of an empty queue's first chunk. Most connections queue a frame or two between
    /// flushes, so a 64 KiB chunk each would make a burst to many of them cost 64 KiB per
    /// connection of address space and scatter its pages; one that keeps writing more than this
    /// between flushes gets standard chunks after the first.
    public static let firstChunkSize = 4 * 1024

    @usableFromInline var chunks: [Chunk] = []
    /// Bytes queued and not yet written.
    public var count: Int { _count }
    @usableFromInline var _count: Int = 0

    public init() {}

    deinit {
        for chunk in chunks { Self.release(chunk) }
    }

    /// Standard chunks go back to the pool; first chunks and oversized ones (a single large
    /// frame) are freed.
    @usableFromInline
    static func release(_ chunk: Chunk) {
        WriteMemory.process.freed(chunk.capacity)
        if chunk.capacity == chunkSize { ChunkPool.give(chunk.base) } else { free(chunk.base) }
    }

    public var isEmpty: Bool { count == 0 }

    /// Contiguous space for `n` bytes at the tail; valid until the next call on this queue.
    @inlinable
    public mutating func reserve(_ n: Int) -> UnsafeMutableRawPointer {
        if let last = chunks.last, last.capacity - last.end >= n {
            return last.base + last.end
        }
        return grow(n)
    }

    @usableFromInline
    mutating func grow(_ n: Int) -> UnsafeMutableRawPointer {
        let capacity = max(n, chunks.isEmpty ? Self.firstChunkSize : Self.chunkSize)
        WriteMemory.process.allocated(capacity)
        let base: UnsafeMutableRawPointer
        if capacity == Self.chunkSize {
            base = ChunkPool.take()
        } else {
            guard let big = malloc(capacity) else { fatalError("out of memory allocating \(capacity) bytes") }
            base = big
        }
        chunks.append(Chunk(base: base, capacity: capacity, start: 0, end: 0))
        return base
    }

    /// Marks `n` bytes written at the pointer `reserve` returned as queued.
    @inlinable
    public mutating func commit(_ n: Int) {
        chunks[chunks.count - 1].end += n
        _count += n
    }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard let src = bytes.baseAddress, bytes.count > 0 else { return }
        reserve(bytes.count).copyMemory(from: src, byteCount: bytes.count)
        commit(bytes.count)
    }

    public mutating func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { append($0) }
    }

    /// Moves everything out of this queue into a new one (no bytes are copied).
    public mutating func take() -> WriteQueue {
        var out = WriteQueue()
        out.chunks = chunks
        out._count = _count
        chunks = []
        _count = 0
        return out
    }

    /// Appends `other`'s chunks after this queue's (no bytes are copied).
    public mutating func append(contentsOf other: consuming WriteQueue) {
        var moved = other.take()
        chunks.append(contentsOf: moved.chunks)
        _count += moved._count
        moved.chunks = []
        moved._count = 0
    }

    /// Drops every queued frame the kernel has not begun to take; a frame partly written is kept
    /// to its end, so the stream stays whole frames (the connection can still be told why, then
    /// closed). It relies on what `reserve` ensures: a frame never spans chunks, so every chunk
    /// starts with a frame, and frames' lengths (`u32` first) lead from there to the partial one.
    public mutating func dropUnstartedFrames() {
        guard var first = chunks.first else { return }
        var keepEnd = first.start
        if first.start > 0 {
            var offset = 0
            while offset < first.start {
                guard first.end - offset >= WireFormatHeader.size else {
                    offset = first.end  // not frames (never seen): keep it all rather than cut one
                    break
                }
                let length = UInt32(littleEndian: first.base.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
                offset += WireFormatHeader.lengthSize + Int(length)
            }
            keepEnd = min(offset, first.end)
        }
        for chunk in chunks.dropFirst() { Self.release(chunk) }
        first.end = keepEnd
        _count = keepEnd - first.start
        if _count == 0 {
            Self.release(first)
            chunks.removeAll(keepingCapacity: false)
        } else {
            chunks = [first]
        }
    }

    /// Removes every frame whose type byte `drop` picks, keeping the others in order (bytes are
    /// copied: for rare paths only). Only for a queue none of which has been written, so each
    /// chunk holds whole frames (a frame never spans chunks, as `reserve` ensures).
    public mutating func removeFrames(where drop: (UInt8) -> Bool) {
        var kept = WriteQueue()
        for chunk in chunks {
            var offset = chunk.start
            while chunk.end - offset >= WireFormatHeader.size {
                let length = Int(UInt32(littleEndian: chunk.base.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
                let frameEnd = min(offset + WireFormatHeader.lengthSize + length, chunk.end)
                let type = chunk.base.load(fromByteOffset: offset + WireFormatHeader.lengthSize, as: UInt8.self)
                if !drop(type) { kept.append(UnsafeRawBufferPointer(start: chunk.base + offset, count: frameEnd - offset)) }
                offset = frameEnd
            }
        }
        self = kept.take()
    }

    /// Fills `iov` with up to `iov.count` pending regions; returns how many.
    func gather(into iov: UnsafeMutableBufferPointer<iovec>) -> Int {
        var n = 0
        for chunk in chunks where n < iov.count && chunk.end > chunk.start {
            iov[n] = iovec(iov_base: chunk.base + chunk.start, iov_len: chunk.end - chunk.start)
            n += 1
        }
        return n
    }

    /// Drops `n` bytes from the head after they were written; frees chunks that emptied.
    public mutating func consume(_ n: Int) {
        _count -= n
        if count == 0 {
            for chunk in chunks { Self.release(chunk) }
            chunks.removeAll(keepingCapacity: false)
            return
        }
        var left = n
        var drained = 0
        while left > 0 {
            let available = chunks[drained].end - chunks[drained].start
            if left >= available {
                left -= available
                drained += 1
            } else {
                chunks[drained].start += left
                left = 0
            }
        }
        for i in 0..<drained { Self.release(chunks[i]) }
        chunks.removeFirst(drained)
    }
}

/// A frame's header as far as the write queue needs it: `u32 length` (of type and body), then
/// the type byte (PROTOCOL.md §4). EvbusIO does not depend on EvbusWire, so it is restated here.
enum WireFormatHeader {
    static let size = 5
    static let lengthSize = 4
}
