import Dispatch
import Glibc
import Synchronization

/// The thread that writes and syncs the log, so the broker's loop never waits for the disk.
///
/// Writers `submit` records with a completion; the thread takes everything submitted since it last
/// looked, appends it all, and makes it durable with one `fdatasync` (group commit): under load one
/// sync covers many records, so throughput grows with load instead of being one sync per record.
/// Each completion then runs (on the storage thread: callers hop back to their own loop) with
/// success, or with the `StoreError` that failed the batch.
///
/// `@unchecked Sendable` proof: `log` is used only by the storage thread after `init` hands it
/// over (the initialiser's caller cannot reach it again), except for reading its `directory`, an
/// immutable `let`; everything else is a `Mutex`, an `Atomic` or a semaphore.
public final class StorageThread: @unchecked Sendable {
    public typealias Completion = @Sendable (Result<Void, StoreError>) -> Void

    private struct Queue {
        var records: [[UInt8]] = []
        var completions: [Completion] = []
        var stopping = false
    }

    private let log: SegmentLog
    private let queue = Mutex(Queue())
    private let work = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)
    private let syncCount = Atomic<UInt64>(0)
    private let recordCount = Atomic<UInt64>(0)

    /// Starts the thread; it owns `log` from now on.
    public init(log: consuming SegmentLog, name: String = "evbus-storage") {
        self.log = log
        let body = Unmanaged.passRetained(self).toOpaque()
        var tid = pthread_t()
        let r = pthread_create(&tid, nil, { arg in
            let thread = Unmanaged<StorageThread>.fromOpaque(arg!).takeRetainedValue()
            thread.run()
            return nil
        }, body)
        precondition(r == 0, "pthread_create failed: \(r)")
        pthread_detach(tid)
    }

    /// Syncs done so far, and records made durable: their ratio is the records per sync.
    public var syncs: UInt64 { syncCount.load(ordering: .relaxed) }
    public var records: UInt64 { recordCount.load(ordering: .relaxed) }

    /// Queues `record`; `done` runs once it is on disk, or failed.
    public func submit(_ record: [UInt8], done: @escaping Completion) {
        let accepted = queue.withLock { q -> Bool in
            guard !q.stopping else { return false }
            q.records.append(record)
            q.completions.append(done)
            return true
        }
        guard accepted else {
            return done(.failure(StoreError("submit", path: log.directory, errno: ESHUTDOWN)))
        }
        work.signal()
    }

    /// Writes what was submitted before the call, then ends the thread and returns.
    public func stop() {
        queue.withLock { $0.stopping = true }
        work.signal()
        finished.wait()
    }

    private func run() {
        while true {
            work.wait()
            let (records, completions, stopping) = queue.withLock { q in
                defer {
                    q.records.removeAll(keepingCapacity: true)
                    q.completions.removeAll(keepingCapacity: true)
                }
                return (q.records, q.completions, q.stopping)
            }
            if !records.isEmpty {
                for r in records { log.append(r) }
                let result: Result<Void, StoreError>
                do {
                    try log.commit()
                    syncCount.add(1, ordering: .relaxed)
                    recordCount.add(UInt64(records.count), ordering: .relaxed)
                    result = .success(())
                } catch {
                    result = .failure(error)
                }
                for done in completions { done(result) }
            }
            if stopping {
                finished.signal()
                return
            }
        }
    }
}
