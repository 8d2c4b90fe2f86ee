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

/// The threads that write and sync the log, so the broker's loop never waits for the disk.
///
/// The core submits one batch per loop turn. The writer thread takes everything submitted since it
/// last looked, writes it and reports it written at once (deliveries wait only for that). The sync
/// thread meanwhile makes what is written durable with one `fdatasync` (group commit: one sync
/// covers every batch written since the last) and reports it synced (confirms wait for that).
/// Writing never waits behind a sync. A failed write or sync fails those batches (the log cuts back
/// to its last good end) and both go on with the next ones, so persisting resumes by itself when
/// space returns. A third thread reads paged-out messages back (`read`), from what is synced only.
///
/// `@unchecked Sendable` proof: `log` is touched only with `lock` held, by the three threads this
/// class starts (the `fdatasync` itself runs on a duplicated descriptor outside the lock), except
/// for its immutable `directory`; everything else is a `Mutex`, an `Atomic`, a semaphore or an
/// immutable `let`.
public final class StorageThread: @unchecked Sendable {
    public typealias Report = @Sendable (StoreProgress) -> Void
    public typealias PageIn = @Sendable (PageResult) -> Void

    private struct Queue {
        var batches: [StoreBatch] = []
        var stopping = false
    }

    /// The writer's and syncer's shared view, under `lock`.
    private struct Shared {
        /// Batches written and not yet synced, oldest first.
        var unsynced: [UInt64] = []
        var written: UInt64 = 0
        var synced: UInt64 = 0
        var writerDone = false
    }

    private let log: SegmentLog
    private let mode: SyncMode
    private let report: Report
    private let pageIn: PageIn
    private let queue = Mutex(Queue())
    /// Reads asked for and not yet started, and whether the reader should end.
    private let reads = Mutex((requests: [PageRequest](), stopping: false))
    private let readWork = DispatchSemaphore(value: 0)
    private let readerFinished = DispatchSemaphore(value: 0)
    private let lock = Mutex(Shared())
    private let work = DispatchSemaphore(value: 0)
    private let syncWork = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)
    private let syncCount = Atomic<UInt64>(0)
    private let batchCount = Atomic<UInt64>(0)

    /// Starts the threads; they own `log` from now on. `report` runs on them, one report at a time
    /// in order, and must not block (the broker's hands each to its loop); so must `pageIn`, which
    /// gets the answers to `read`, in the order asked.
    public init(
        log: consuming SegmentLog, sync mode: SyncMode = .always, name: String = "evbus-storage", report: @escaping Report,
        pageIn: @escaping PageIn = { _ in }
    ) {
        self.log = log
        self.mode = mode
        self.report = report
        self.pageIn = pageIn
        Self.start(self) { $0.runWriter() }
        Self.start(self) { $0.runSyncer() }
        Self.start(self) { $0.runReader() }
    }

    private static func start(_ storage: StorageThread, _ body: @escaping (StorageThread) -> Void) {
        final class Start {
            let storage: StorageThread
            let body: (StorageThread) -> Void
            init(_ s: StorageThread, _ b: @escaping (StorageThread) -> Void) { storage = s; body = b }
        }
        let arg = Unmanaged.passRetained(Start(storage, body)).toOpaque()
        var tid = pthread_t()
        let r = pthread_create(&tid, nil, { arg in
            let start = Unmanaged<Start>.fromOpaque(arg!).takeRetainedValue()
            start.body(start.storage)
            return nil
        }, arg)
        precondition(r == 0, "pthread_create failed: \(r)")
        pthread_detach(tid)
    }

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

    /// Reads a queue's paged-out messages back; the answer goes to `pageIn`.
    public func read(_ request: PageRequest) {
        let accepted = reads.withLock { r -> Bool in
            guard !r.stopping else { return false }
            r.requests.append(request)
            return true
        }
        if accepted { readWork.signal() }
    }

    /// Writes and syncs what was submitted before the call, then ends the threads and returns
    /// (reads not yet started are dropped: the broker is going away).
    public func stop() {
        queue.withLock { $0.stopping = true }
        work.signal()
        finished.wait()
        reads.withLock { $0.stopping = true }
        readWork.signal()
        readerFinished.wait()
    }

    // MARK: Reader

    private func runReader() {
        while true {
            readWork.wait()
            let (requests, stopping) = reads.withLock { r in
                defer { r.requests.removeAll(keepingCapacity: true) }
                return (r.requests, r.stopping)
            }
            if stopping {
                readerFinished.signal()
                return
            }
            for request in requests {
                // The lock only for the list of segments: reading runs beside writes and syncs.
                let segments = lock.withLock { _ in log.readableSegments() }
                pageIn(LogReader.read(request, from: segments))
            }
        }
    }

    // MARK: Writer

    private func runWriter() {
        while true {
            work.wait()
            let (batches, stopping) = queue.withLock { q in
                defer { q.batches.removeAll(keepingCapacity: true) }
                return (q.batches, q.stopping)
            }
            if !batches.isEmpty {
                var progress = StoreProgress()
                lock.withLock { shared in
                    for var batch in batches {
                        do throws(StoreError) {
                            if batch.roll {
                                try log.roll()  // syncs the old segment first
                                shared.synced = shared.written
                                progress.synced = shared.written
                                shared.unsynced.removeAll()
                            }
                            try log.writeBatch(&batch.bytes)
                            progress.placed.append(.init(batch: batch.number, segment: log.currentSegment))
                            shared.unsynced.append(batch.number)
                            for segment in batch.deleteSegments { try log.delete(segment: segment) }
                        } catch {
                            progress.failed.append(batch.number)
                            progress.error = error
                        }
                        shared.written = batch.number
                        batchCount.add(1, ordering: .relaxed)
                    }
                    progress.written = shared.written
                    progress.synced = shared.synced
                    fillFigures(&progress)
                    // Reported with the lock held, so the two threads' reports arrive in the order
                    // of the changes they describe (a batch is placed before it is synced).
                    report(progress)
                }
                if mode == .always { syncWork.signal() }
            }
            if stopping {
                lock.withLock { $0.writerDone = true }
                syncWork.signal()
                return
            }
        }
    }

    // MARK: Syncer

    private func runSyncer() {
        while true {
            switch mode {
            case .always:
                syncWork.wait()
            case .interval(let ms):
                _ = syncWork.wait(timeout: .now() + .milliseconds(ms))
            }
            let (point, target, done) = lock.withLock { s in (log.syncPoint(), s.unsynced.last, s.writerDone) }
            if let point, let target {
                let ok = fdatasync(point.fd) == 0
                let e = errno
                close(point.fd)
                var progress = StoreProgress()
                lock.withLock { shared in
                    if ok {
                        log.markDurable(segment: point.segment, size: point.size)
                        shared.unsynced.removeAll { $0 <= target }
                        shared.synced = max(shared.synced, target)
                        syncCount.add(1, ordering: .relaxed)
                    } else {
                        // What was written since the last good sync may be gone: cut it off and
                        // fail it all, including batches written while this sync ran.
                        log.syncFailed(segment: point.segment)
                        progress.failed = shared.unsynced
                        progress.error = StoreError("fdatasync", path: log.path(of: point.segment), errno: e)
                        shared.unsynced.removeAll()
                        shared.synced = shared.written
                    }
                    progress.written = shared.written
                    progress.synced = shared.synced
                    fillFigures(&progress)
                    report(progress)
                }
            }
            if done {
                if point == nil || lock.withLock({ $0.unsynced.isEmpty }) {
                    finished.signal()
                    return
                }
                syncWork.signal()  // one more round for what the writer wrote last
            }
        }
    }

    /// The log's figures, with `lock` held.
    private func fillFigures(_ progress: inout StoreProgress) {
        progress.segments = log.segments.count
        progress.bytesOnDisk = log.bytesOnDisk()
        progress.syncs = syncCount.load(ordering: .relaxed)
    }
}
