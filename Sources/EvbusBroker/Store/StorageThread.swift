import Dispatch
import Glibc
import Synchronization

/// One batch of log records from the broker core: everything the core recorded during one turn of
/// its loop, numbered 1, 2, 3... in the order submitted.
public struct StoreBatch: Sendable {
    public var number: UInt64
    /// Records framed by `RecordWriter` (checksum slots zero: the storage thread fills them in).
    public var bytes: [UInt8]
    /// Start a new segment before writing (the batch then begins with a topology snapshot).
    public var roll = false
    /// Segments to delete once this batch is written (their messages are all settled).
    public var deleteSegments: [UInt64] = []

    public init(number: UInt64, bytes: [UInt8], roll: Bool = false, deleteSegments: [UInt64] = []) {
        self.number = number
        self.bytes = bytes
        self.roll = roll
        self.deleteSegments = deleteSegments
    }
}

/// What the storage thread tells the core: how far the batches have got.
public struct StoreProgress: Sendable, Equatable {
    /// Every batch up to this one has been written (to the kernel) or has failed.
    public var written: UInt64 = 0
    /// Every batch up to this one is on disk (`fdatasync` returned) or has failed.
    public var synced: UInt64 = 0
    /// The segment each batch written since the last report went to.
    public var placed: [Placement] = []
    /// Batches that failed (a write, a sync or a new segment failed): their records are not on disk.
    public var failed: [UInt64] = []
    public var error: StoreError?
    /// The log's figures after this step.
    public var segments = 0
    public var bytesOnDisk: UInt64 = 0
    public var syncs: UInt64 = 0

    public struct Placement: Sendable, Equatable {
        public var batch: UInt64
        public var segment: UInt64
        public init(batch: UInt64, segment: UInt64) {
            self.batch = batch
            self.segment = segment
        }
    }

    public init() {}
}

/// When the storage thread syncs.
public enum SyncMode: Sendable, Equatable {
    /// After every write: a confirm means the message is on disk (group commit keeps it fast).
    case always
    /// Every so many milliseconds: publishes are confirmed once written, and a power loss (not a
    /// broker crash) loses up to that much confirmed work.
    case interval(milliseconds: Int)
}

/// The thread that writes and syncs the log, so the broker's loop never waits for the disk.
///
/// The core submits one batch per loop turn; the thread takes everything submitted since it last
/// looked, writes it, reports it written, makes it durable with one `fdatasync` (group commit: under
/// load one sync covers many batches), and reports it synced. A failed write or sync fails those
/// batches (the log cuts back to its last good end) and the thread goes on with the next ones, so
/// persisting resumes by itself when space returns.
///
/// `@unchecked Sendable` proof: `log` is used only by the storage thread after `init` hands it
/// over (the initialiser's caller cannot reach it again), except for its immutable `directory`;
/// everything else is a `Mutex`, an `Atomic`, a semaphore or an immutable `let`.
public final class StorageThread: @unchecked Sendable {
    public typealias Report = @Sendable (StoreProgress) -> Void

    private struct Queue {
        var batches: [StoreBatch] = []
        var stopping = false
    }

    private let log: SegmentLog
    private let mode: SyncMode
    private let report: Report
    private let queue = Mutex(Queue())
    private let work = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)
    private let syncCount = Atomic<UInt64>(0)
    private let batchCount = Atomic<UInt64>(0)

    /// Starts the thread; it owns `log` from now on. `report` runs on the storage thread.
    public init(log: consuming SegmentLog, sync mode: SyncMode = .always, name: String = "evbus-storage", report: @escaping Report) {
        self.log = log
        self.mode = mode
        self.report = report
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

    public var directory: String { log.directory }
    /// Syncs done so far, and batches written: their ratio is the batches per sync.
    public var syncs: UInt64 { syncCount.load(ordering: .relaxed) }
    public var batches: UInt64 { batchCount.load(ordering: .relaxed) }

    /// Queues a batch; it is reported written and then synced (or failed).
    public func submit(_ batch: StoreBatch) {
        let accepted = queue.withLock { q -> Bool in
            guard !q.stopping else { return false }
            q.batches.append(batch)
            return true
        }
        if accepted {
            work.signal()
        } else {
            var p = StoreProgress()
            p.failed = [batch.number]
            p.error = StoreError("submit", path: log.directory, errno: ESHUTDOWN)
            report(p)
        }
    }

    /// Writes and syncs what was submitted before the call, then ends the thread and returns.
    public func stop() {
        queue.withLock { $0.stopping = true }
        work.signal()
        finished.wait()
    }

    private func run() {
        var progress = StoreProgress()
        /// Batches written since the last successful sync: a failed sync fails them.
        var unsynced: [UInt64] = []
        var lastSync = monotonicMillis()
        while true {
            switch mode {
            case .always:
                work.wait()
            case .interval(let ms):
                let left = max(0, lastSync + ms - monotonicMillis())
                _ = work.wait(timeout: .now() + .milliseconds(unsynced.isEmpty ? 1000 : left))
            }
            let (batches, stopping) = queue.withLock { q in
                defer { q.batches.removeAll(keepingCapacity: true) }
                return (q.batches, q.stopping)
            }
            progress.placed.removeAll()
            progress.failed.removeAll()
            progress.error = nil
            for var batch in batches {
                do {
                    if batch.roll {
                        try log.roll()
                        unsynced.removeAll()  // rolling synced the old segment
                        progress.synced = progress.written
                    }
                    try log.writeBatch(&batch.bytes)
                    progress.placed.append(.init(batch: batch.number, segment: log.currentSegment))
                    unsynced.append(batch.number)
                    for segment in batch.deleteSegments { try log.delete(segment: segment) }
                } catch {
                    progress.failed.append(batch.number)
                    progress.error = error
                }
                progress.written = batch.number
                batchCount.add(1, ordering: .relaxed)
            }
            let syncNow: Bool
            switch mode {
            case .always: syncNow = true
            case .interval(let ms): syncNow = stopping || monotonicMillis() - lastSync >= ms
            }
            if !batches.isEmpty && syncNow { send(&progress) }  // written: deliveries may go
            if syncNow && !unsynced.isEmpty {
                do {
                    try log.sync()
                    syncCount.add(1, ordering: .relaxed)
                } catch {
                    progress.failed.append(contentsOf: unsynced)
                    progress.error = error
                }
                unsynced.removeAll()
                lastSync = monotonicMillis()
            }
            if syncNow {
                progress.synced = progress.written
                send(&progress)
            } else if !batches.isEmpty {
                send(&progress)
            }
            if stopping {
                finished.signal()
                return
            }
        }
    }

    private func send(_ progress: inout StoreProgress) {
        progress.segments = log.segments.count
        progress.bytesOnDisk = log.bytesOnDisk()
        progress.syncs = syncCount.load(ordering: .relaxed)
        report(progress)
        progress.placed.removeAll()
        progress.failed.removeAll()
        progress.error = nil
    }

    private func monotonicMillis() -> Int {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return t.tv_sec * 1000 + t.tv_nsec / 1_000_000
    }
}
