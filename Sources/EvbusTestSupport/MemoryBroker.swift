public import EvbusBroker
public import EvbusWire

/// The broker core with no sockets: a `BrokerOutput` that keeps each connection's output bytes in
/// memory and does what the server's glue does, in the same order: frames a paused connection
/// sends wait until it is resumed, a close takes effect after the input that asked for it, and
/// a wake-up fires when the test moves the clock past it.
///
/// Single-threaded: one test drives it from one task at a time.
public final class MemoryBroker: BrokerOutput {
    public let clock = ManualClock()
    public private(set) var core: BrokerCore<MemoryBroker>!
    let settings: CoreSettings

    final class Connection {
        let session: ConnectionState
        var output: [UInt8] = []
        var read = 0
        /// Over the high watermark, until the client reads below the low one (like `Channel`).
        var full = false
        var paused = false
        /// Frames sent while paused, for when it resumes.
        var held: [[UInt8]] = []
        var closed = false
        init(session: ConnectionState) { self.session = session }
        var unread: Int { output.count - read }
    }

    private var connections: [Connection?] = []
    private var scratch = UnsafeMutableRawPointer.allocate(byteCount: 1 << 16, alignment: 16)
    private var scratchSize = 1 << 16
    private var closing: [UInt32] = []
    private var resumed: [UInt32] = []
    private var wakeAt: UInt64 = 0
    public private(set) var logLines: [String] = []
    /// The `event` of each log line, in order.
    public private(set) var logEvents: [String] = []

    /// Batches of log records the core handed over, in order (with `persisting`).
    public private(set) var persisted: [StoreBatch] = []
    private var reportedUpTo: UInt64 = 0

    /// `persisting` turns the core's persistence on over an empty data directory; the test plays
    /// the storage thread with `storageDone`.
    public init(settings: CoreSettings = CoreSettings(), persisting: Bool = false, sync: SyncMode = .always) {
        self.settings = settings
        core = BrokerCore(settings: settings, clock: .manual(clock), output: self)
        if persisting {
            core.enablePersistence(RecoveredStore(), sync: sync, segmentBytes: 1 << 20)
            core.startPersisting()
        }
    }

    public func persist(_ batch: StoreBatch) { persisted.append(batch) }

    /// Reads of paged-out messages the core asked for, in order (a test answers them, or not).
    public private(set) var readRequests: [PageRequest] = []
    public func readBack(_ request: PageRequest) { readRequests.append(request) }

    /// The reads asked for and not yet answered; taking them leaves none.
    public func takeReadRequests() -> [PageRequest] {
        defer { readRequests.removeAll() }
        return readRequests
    }

    /// Plays the storage thread's reader: `result` reaches the core as if read from the log.
    public func pageIn(_ result: PageResult) {
        core.pagedIn(result)
        settle()
    }

    /// Plays the storage thread: every batch handed over so far is written and synced into
    /// segment 1, or (`failing`) fails with ENOSPC.
    public func storageDone(failing: Bool = false) {
        guard let last = persisted.last?.number, last > reportedUpTo else { return }
        var p = StoreProgress()
        let numbers = (reportedUpTo + 1)...last
        if failing {
            p.failed = Array(numbers)
            p.error = StoreError("write", path: "memory", errno: 28)
        } else {
            p.placed = numbers.map { .init(batch: $0, segment: 1) }
        }
        p.written = last
        p.synced = last
        reportedUpTo = last
        core.storageProgress(p)
        settle()
    }

    deinit { scratch.deallocate() }

    // MARK: Driving it

    /// A connection that has completed its handshake, as `identity` (what the kernel would say),
    /// asking for SENDER frames if `senders`.
    public func connect(_ identity: PeerIdentity = .unknown, name: String = "", senders: Bool = false) -> ConnectionState {
        let session = core.open(identity: identity)
        try? core.hello(session, name: name, flags: senders ? HelloFlag.senders : 0)
        let slot = Int(session.slot)
        while connections.count <= slot { connections.append(nil) }
        connections[slot] = Connection(session: session)
        return session
    }

    /// Frames from `session`, as one batch read from its socket.
    public func send(_ frames: [Frame], from session: ConnectionState) {
        guard let c = connection(session.slot), !c.closed else { return }
        for frame in frames { c.held.append(frame.encoded()) }
        deliverHeld(c)
        settle()
    }

    /// One frame's exact bytes from `session` (for frames `Frame` cannot express: malformed ones).
    public func send(bytes: [UInt8], from session: ConnectionState) {
        guard let c = connection(session.slot), !c.closed else { return }
        c.held.append(bytes)
        deliverHeld(c)
        settle()
    }

    /// The next complete frame `session` has been sent, if any.
    public func nextFrame(for session: ConnectionState) throws -> Frame? {
        guard let c = connection(session.slot) ?? closedConnections[session.slot] else { return nil }
        let frame: Frame? = try c.output.withUnsafeBytes { raw in
            let rest = UnsafeRawBufferPointer(rebasing: raw[c.read...])
            switch try FrameSplitter.next(rest, maxFrame: WireFormat.maxMaxFrame + 64) {
            case .needMore: return nil
            case .frame(let f, let consumed):
                c.read += consumed
                return try Frame.decode(type: f.type, body: f.body)
            }
        }
        if c.full && c.unread <= settings.lowWatermarkBytes && !c.closed {
            c.full = false
            core.becameWritable(c.session)
            settle()
        }
        return frame
    }

    /// The client hangs up.
    public func disconnect(_ session: ConnectionState) {
        guard let c = connection(session.slot), !c.closed else { return }
        finishClose(c)
        settle()
    }

    /// Moves the clock; fires the core's wake-up if it has come.
    public func advance(by duration: Duration) {
        clock.advance(by: duration)
        if wakeAt != 0 && wakeAt <= clock.now {
            wakeAt = 0
            core.timerFired()
        }
        settle()
    }

    // MARK: The glue's order of events

    private var closedConnections: [UInt32: Connection] = [:]

    private func connection(_ slot: UInt32) -> Connection? {
        Int(slot) < connections.count ? connections[Int(slot)] : nil
    }

    private func deliverHeld(_ c: Connection) {
        while !c.held.isEmpty && !c.paused && !c.closed && c.session.isOpen && c.session.blockedBy == 0 {
            let bytes = c.held.removeFirst()
            let failure = bytes.withUnsafeBytes { raw -> WireError? in
                do throws(WireError) {
                    guard case .frame(let frame, _) = try FrameSplitter.next(raw, maxFrame: WireFormat.maxMaxFrame) else { return nil }
                    try core.received(frame, from: c.session)
                    return nil
                } catch {
                    return error
                }
            }
            if let error = failure {
                // What the server does with a protocol violation: ERROR, then close this one.
                core.countProtocolError()
                c.output.append(contentsOf: Frame.error(code: error.code, requestID: 0, message: error.message).encoded())
                core.closing(c.session)
                closing.append(c.session.slot)
                break
            }
        }
        core.endOfBatch(c.session)
    }

    /// Runs what the core asked for during the last input, until nothing more is asked.
    private func settle() {
        while !closing.isEmpty || !resumed.isEmpty {
            let toClose = closing
            closing.removeAll()
            for slot in toClose { if let c = connection(slot), !c.closed { finishClose(c) } }
            let toResume = resumed
            resumed.removeAll()
            for slot in toResume { if let c = connection(slot), !c.closed { deliverHeld(c) } }
        }
    }

    private func finishClose(_ c: Connection) {
        c.closed = true
        core.closed(c.session)
        closedConnections[c.session.slot] = c
        connections[Int(c.session.slot)] = nil
    }

    // MARK: BrokerOutput

    public func reserve(_ connection: UInt32, _ count: Int) -> UnsafeMutableRawPointer {
        if count > scratchSize {
            scratch.deallocate()
            scratch = .allocate(byteCount: count, alignment: 16)
            scratchSize = count
        }
        return scratch
    }

    public func commit(_ slot: UInt32, _ count: Int) -> Bool {
        guard let c = connection(slot) else { return true }
        c.output.append(contentsOf: UnsafeRawBufferPointer(start: scratch, count: count))
        if !c.full && c.unread > settings.highWatermarkBytes { c.full = true }
        return !c.full
    }

    public func bufferedBytes(_ slot: UInt32) -> Int { connection(slot)?.unread ?? 0 }

    public func pauseReading(_ slot: UInt32) { connection(slot)?.paused = true }

    public func resumeReading(_ slot: UInt32) {
        guard let c = connection(slot), c.paused else { return }
        c.paused = false
        resumed.append(slot)
    }

    /// What the client has not read is dropped (it reads whole frames, so at a frame boundary).
    public func discardQueued(_ slot: UInt32) {
        guard let c = connection(slot) else { return }
        c.output.removeSubrange(c.read...)
    }

    public func close(_ slot: UInt32, graceNanos: UInt64) {
        closing.append(slot)
    }

    public func wake(at deadline: UInt64) { wakeAt = deadline }

    public func log(_ level: CoreLogLevel, _ connection: UInt32?, event: String, fields: [(String, String)], _ message: String) {
        logLines.append(message)
        logEvents.append(event)
    }

    /// A counter from the core's statistics.
    public func stat(_ name: String) -> UInt64 {
        core.statEntries().first { $0.name == name }?.value ?? 0
    }
}
