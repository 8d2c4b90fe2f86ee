import CEvbusLinux
import Glibc
import Synchronization

/// How much memory write queues hold across the process, so that what a burst took can be given
/// back to the kernel once it has drained.
///
/// Freed chunks go back to malloc, and glibc keeps freed heap pages resident (it trims only the top
/// of the heap): after 10,000 connections each queued one message, the broker stayed 50 MB larger
/// than before, and a second burst, carved from the fragmented free space at other offsets,
/// touched more pages still. `returnAfterBurst` asks glibc to release free pages, but only when the
/// bytes held fell well below their peak: under steady load (live ≈ peak) it does nothing, so busy
/// queues do not page-fault in memory that was released a moment before.
public final class WriteMemory: Sendable {
    /// The gauge every `WriteQueue` in this process reports to.
    public static let process = WriteMemory()

    private let live = Atomic<Int>(0)
    private let peak = Atomic<Int>(0)

    public init() {}

    /// Bytes in chunks that write queues (and the chunk pool) hold now.
    public var liveBytes: Int { live.load(ordering: .relaxed) }

    public func allocated(_ bytes: Int) {
        let now = live.add(bytes, ordering: .relaxed).newValue
        peak.max(now, ordering: .relaxed)
    }

    public func freed(_ bytes: Int) {
        live.subtract(bytes, ordering: .relaxed)
    }

    /// The drop from the peak that is worth a `malloc_trim`: below it, what could come back is
    /// less than what the walk over the heap costs in faults when the memory is wanted again.
    public static let burstBytes = 8 << 20

    /// Returns freed heap pages to the kernel if the bytes held fell by `burstBytes` or more
    /// since the peak; the peak then restarts from now. Call it now and then (the broker: once a
    /// second), on any thread. Returns whether it trimmed.
    @discardableResult
    public func returnAfterBurst() -> Bool {
        returnAfterBurst { _ = malloc_trim(0) }
    }

    /// `returnAfterBurst` with what gives the memory back named (tests count calls).
    func returnAfterBurst(trim: () -> Void) -> Bool {
        let now = live.load(ordering: .relaxed)
        let highest = peak.exchange(now, ordering: .relaxed)
        guard highest - now >= Self.burstBytes else {
            peak.max(highest, ordering: .relaxed)
            return false
        }
        trim()
        return true
    }
}
