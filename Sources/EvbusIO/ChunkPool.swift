import Glibc
import Synchronization

/// A small process-wide stock of standard-size write chunks.
///
/// Busy connections drain and refill their queues every loop iteration; with plain malloc/free, glibc
/// returns each freed 64 KiB chunk to the kernel and the next one page-faults in again (perf showed
/// page clearing as a top cost at 1 KiB payloads). The pool keeps at most `limit` chunks, so memory
/// held is bounded (4 MiB) and idle connections still hold none.
enum ChunkPool {
    static let limit = 64
    /// Chunk addresses as integers (raw pointers are not Sendable); each is owned by the pool alone.
    private static let stock = Mutex<[UInt]>([])

    static func take() -> UnsafeMutableRawPointer {
        if let address = stock.withLock({ $0.popLast() }), let chunk = UnsafeMutableRawPointer(bitPattern: address) {
            return chunk
        }
        guard let fresh = malloc(WriteQueue.chunkSize) else { fatalError("out of memory allocating a write chunk") }
        return fresh
    }

    static func give(_ chunk: UnsafeMutableRawPointer) {
        let kept = stock.withLock { s -> Bool in
            guard s.count < limit else { return false }
            s.append(UInt(bitPattern: chunk))
            return true
        }
        if !kept { free(chunk) }
    }
}
