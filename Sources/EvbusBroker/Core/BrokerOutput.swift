/// Everything the broker core asks of the world: the only way its decisions leave it.
///
/// Connections are named by the slot the core gave them (`BrokerCore.open`). The server implements
/// this over channels and sockets; tests implement it in memory (`MemoryOutput`). The core is
/// generic over its output, so each of these calls is a direct call, not a dynamic one.
public protocol BrokerOutput: AnyObject {
    /// Contiguous room for `count` bytes of frames to `connection`; `commit` queues what was written.
    func reserve(_ connection: UInt32, _ count: Int) -> UnsafeMutableRawPointer
    /// Queues `count` bytes written at `reserve`'s pointer. Returns false while the connection's
    /// output is over its high watermark (the core then applies its slow-consumer rules).
    func commit(_ connection: UInt32, _ count: Int) -> Bool
    /// Bytes queued for `connection` and not yet taken by it (for log lines).
    func bufferedBytes(_ connection: UInt32) -> Int
    /// Stop taking input from `connection` until `resumeReading`.
    func pauseReading(_ connection: UInt32)
    func resumeReading(_ connection: UInt32)
    /// Drop the frames queued for `connection` that have not begun to go out (one partly sent is
    /// finished first): before telling a connection it is cut off.
    func discardQueued(_ connection: UInt32)
    /// Close `connection` once what is queued for it has gone out (after `graceNanos` at most).
    /// The core has already stopped treating it as open; it hears `closed` when it is gone.
    func close(_ connection: UInt32, graceNanos: UInt64)
    /// Call `BrokerCore.timerFired()` at monotonic time `deadline` (ns) or soon after. Each call
    /// replaces the previous request; 0 cancels it.
    func wake(at deadline: UInt64)
    /// Hand a batch of log records to the storage thread; its progress comes back through
    /// `BrokerCore.storageProgress`. Called only when persistence is on.
    func persist(_ batch: StoreBatch)
    /// Have the storage thread read a queue's paged-out messages back; the answer comes back
    /// through `BrokerCore.pagedIn`. Called only when persistence is on.
    func readBack(_ request: PageRequest)
    /// One log line about `connection` (nil: about the broker): `event` names what happened in a
    /// stable token (`access-refused`, `closed`...), `fields` add keys of its own (`reason`).
    /// Cold paths only.
    func log(_ level: CoreLogLevel, _ connection: UInt32?, event: String, fields: [(String, String)], _ message: String)
}

extension BrokerOutput {
    func log(_ level: CoreLogLevel, _ connection: UInt32?, event: String, _ message: String) {
        log(level, connection, event: event, fields: [], message)
    }
}

/// How much a core log line matters (the server maps it to its logger's levels).
public enum CoreLogLevel: Sendable {
    case debug, info, warning
}
