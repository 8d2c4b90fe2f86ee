import EvbusIO
import Glibc

/// The server's glue to the persistence log: it locks the data directory (one broker per
/// directory), replays it into the core, runs the storage thread and carries its reports back to
/// the loop. Holds no rule: what to record and when to confirm are the core's.
final class BrokerStorage {
    private let lockFD: Int32
    private(set) var thread: StorageThread?

    /// Locks `directory` (created 0700 if missing) and replays it into `core`.
    init(directory: String, config: BrokerConfig, core: BrokerCore<BrokerServer>) throws {
        do {
            try SegmentLog.makeDirectory(directory)
        } catch {
            throw BrokerServer.StartError(description: "data directory: \(error)")
        }
        let lockPath = directory + "/LOCK"
        lockFD = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lockFD >= 0 else {
            throw BrokerServer.StartError(description: "data directory: cannot open \(lockPath): \(String(cString: strerror(errno)))")
        }
        guard flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
            close(lockFD)
            throw BrokerServer.StartError(description: "data directory \(directory) is in use by another broker (\(lockPath) is locked)")
        }
        let (log, recovered): (SegmentLog, RecoveredStore)
        do {
            (log, recovered) = try RecoveredStore.open(directory: directory, segmentBytes: config.segmentBytes)
        } catch {
            close(lockFD)
            throw BrokerServer.StartError(description: "data directory: \(error)")
        }
        core.enablePersistence(recovered, sync: config.sync, segmentBytes: config.segmentBytes)
        pendingLog = log
    }

    private var pendingLog: SegmentLog?

    /// Starts the storage thread; its reports and the messages it reads back reach `server.core`
    /// on the loop thread.
    func start(
        loop: EventLoop, sync: SyncMode, deliver: @escaping (StoreProgress) -> Void, pageIn: @escaping (PageResult) -> Void
    ) {
        guard let log = pendingLog else { return }
        pendingLog = nil
        let bound = LoopBound(deliver, loop: loop)
        let boundPageIn = LoopBound(pageIn, loop: loop)
        thread = StorageThread(log: log, sync: sync) { progress in
            // A report after the loop stopped (the final sync at shutdown) has no one to tell.
            try? loop.execute { bound.value(progress) }
        } pageIn: { result in
            try? loop.execute { boundPageIn.value(result) }
        }
    }

    /// Writes and syncs everything submitted, stops the thread and unlocks the directory.
    func stop() {
        thread?.stop()
        thread = nil
        flock(lockFD, LOCK_UN)
        close(lockFD)
    }
}
