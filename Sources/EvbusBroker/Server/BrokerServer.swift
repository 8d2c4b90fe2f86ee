public import EvbusIO
public import EvbusWire
import Glibc

/// The broker on its event loop: the glue between the sockets and the broker core. It accepts
/// connections, hands their frames to the core, and carries out what the core asks (bytes to a
/// connection, pause, resume, close, a wake-up), holding no broker rule itself.
/// Loop-bound: create and use it on `loop`'s thread.
public final class BrokerServer {
    public let config: BrokerConfig
    public let socketPath: String
    let loop: EventLoop
    let log: Logger
    /// Refusal lines a client can cause over and over: at most a burst per uid and window.
    private var logLimit = LogRateLimit()
    /// The rules. Created right after the server (it needs the server as its output).
    private(set) var core: BrokerCore<BrokerServer>!

    /// What timers hold instead of a weak reference to the server: a weak reference would give the
    /// server a refcount side table and put every retain of it on the slow path (measured: the
    /// work-queue benchmark spent 7% of its time there).
    private lazy var lifeline = Lifeline(self)

    final class Lifeline {
        /// Valid while `isAlive`: the server clears the flag in its deinit.
        unowned(unsafe) let server: BrokerServer
        var isAlive = true
        init(_ server: BrokerServer) { self.server = server }
    }

    deinit { lifeline.isAlive = false }

    /// A loop timer that runs `body` only while the server exists.
    @discardableResult
    func scheduleTimer(afterNanos delay: UInt64, everyNanos interval: UInt64? = nil, _ body: @escaping (BrokerServer) -> Void) -> TimerID {
        let lifeline = self.lifeline
        return loop.scheduleTimer(afterNanos: delay, everyNanos: interval) {
            if lifeline.isAlive { body(lifeline.server) }
        }
    }
    private var rateTimer: TimerID?
    /// The core's one wake-up (`wake(at:)`): its deadline and timer.
    private var wakeTimer: (at: UInt64, id: TimerID)?

    private var handshakes = HandshakeDeadlines()
    private var handshakeTimer: TimerID?

    private var listener: Listener?
    /// Indexed by the core's session slots: a connection exists exactly while its session does.
    private(set) var connections: [BrokerConnection?] = []
    /// Each slot's channel, unretained, for the output calls made for every frame the core writes
    /// (reading a strong reference out of `connections` costs two atomic retains and releases per
    /// call, measured at 15% of the fan-out benchmark). Safe: set when the slot's connection is
    /// stored in `connections`, which keeps the channel alive, and cleared when it is removed;
    /// the core writes only to slots with a live session, which are exactly those.
    @exclusivity(unchecked) private var channels: [Unmanaged<Channel>?] = []
    var onShutdownComplete: (() -> Void)?
    /// The persistence log, when the config names a data directory.
    private var storage: BrokerStorage?

    /// Binds the socket and starts accepting. Refuses to start over a live broker; replaces a stale
    /// socket file; refuses to replace a file that is not a socket. Loop thread only.
    /// - Parameter listenFD: a listening socket to serve instead of binding one (socket
    ///   activation: systemd made it, with its path, mode and owner, and keeps its file).
    public init(config: BrokerConfig, loop: EventLoop, log: Logger, listenFD: Int32? = nil) throws {
        self.config = config
        self.loop = loop
        self.log = log
        socketPath = listenFD.flatMap(Listener.boundPath) ?? SocketPath.resolve(config.socketPath)
        core = BrokerCore(settings: CoreSettings(config), output: self)
        // The socket first: a broker refused for a live one must not touch (or lock) the data.
        if listenFD == nil { try Self.clearStaleSocket(socketPath, log: log) }
        if let dir = config.dataDir { storage = try BrokerStorage(directory: dir, config: config, core: core) }
        if let listenFD {
            listener = try Listener(
                adopting: listenFD, path: socketPath, loop: loop,
                onAccept: { [unowned self] fd in accept(fd) },
                onError: { [log] error in log.error("accept: \(error)") })
            log.info("socket activation: serving the listening socket passed as descriptor \(listenFD) (\(socketPath))")
        } else {
            listener = try Listener(
                path: socketPath, mode: config.socketMode, group: config.socketGroup.flatMap(BrokerConfig.groupID), loop: loop,
                onAccept: { [unowned self] fd in accept(fd) },
                onError: { [log] error in log.error("accept: \(error)") })
        }
        do {
            try core.topology.declare(config)
        } catch {
            storage?.stop()
            throw StartError(description: "config: \(error.keyPath): \(error.reason)")
        }
        let lifeline = self.lifeline
        storage?.start(loop: loop, sync: config.sync) { progress in
            if lifeline.isAlive { lifeline.server.core.storageProgress(progress) }
        } pageIn: { result in
            if lifeline.isAlive { lifeline.server.core.pagedIn(result) }
        }
        core.startPersisting()
        if config.access != nil || !config.quotas.isEmpty { core.installAccess(rules: config.access, quotas: config.quotas) }
        rateTimer = scheduleTimer(afterNanos: 1_000_000_000, everyNanos: 1_000_000_000) { server in
            server.core.sampleRates()
            server.reportSuppressedLogLines()
            WriteMemory.process.returnAfterBurst()
        }
        log.info("listening on \(socketPath) (policy \(config.slowConsumerPolicy.rawValue), max frame \(config.maxFrameBytes) bytes, \(config.dataDir.map { "data in \($0)" } ?? "no data directory: durable queues are kept in memory"))")
    }

    /// Why the broker cannot start.
    public struct StartError: Error, CustomStringConvertible {
        public var description: String
    }

    static func clearStaleSocket(_ path: String, log: Logger) throws {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        guard info.st_mode & S_IFMT == S_IFSOCK else {
            throw StartError(description: "\(path) exists and is not a socket; refusing to replace it")
        }
        if UnixSocket.isLive(path: path) {
            throw StartError(description: "another broker is already listening on \(path)")
        }
        unlink(path)
        log.info("replaced stale socket file \(path)")
    }

    // MARK: Connections

    private func accept(_ fd: Int32) {
        let credentials = try? UnixSocket.peerCredentials(fd)
        let channel: Channel
        do {
            channel = try Channel(fd: fd, loop: loop, highWatermark: config.highWatermarkBytes, lowWatermark: config.lowWatermarkBytes)
        } catch {
            log.error("cannot register connection: \(error)")
            Glibc.close(fd)
            return
        }
        let session = core.open(identity: credentials.map {
            PeerIdentity(uid: $0.uid, gid: $0.gid, pid: UInt32(bitPattern: $0.pid), groups: $0.groups)
        } ?? .unknown)
        let slot = Int(session.slot)
        if slot == connections.count {
            connections.append(nil)
            channels.append(nil)
        }
        let connection = BrokerConnection(session: session, channel: channel, credentials: credentials, server: self)
        connections[slot] = connection
        channels[slot] = Unmanaged.passUnretained(channel)
        channel.delegate = connection
        if onShutdownComplete != nil { goAway(connection) }
        // A silent client must not hold a connection forever. The deadline names the connection
        // by slot and id (a weak reference would give every connection a refcount side table,
        // which made all its retains and releases take the slow path: -30% pub/sub throughput).
        handshakes.add(.init(
            deadline: monotonicNanos() &+ UInt64(config.handshakeTimeoutMillis) * 1_000_000,
            slot: session.slot, connectionID: session.id))
        if handshakeTimer == nil { armHandshakeTimer() }
    }

    /// A connection finished its handshake: forget the deadlines at the front that no longer matter
    /// (the timer, if armed for one of them, finds nothing to do and re-arms for the next).
    func handshakeCompleted() {
        handshakes.dropFront { entry in
            guard let c = connections[Int(entry.slot)], c.session.id == entry.connectionID else { return true }
            return c.phase == .open
        }
    }

    /// One timer for the oldest handshake deadline; each firing fails the connections still in
    /// their handshake whose time is up, and re-arms for the next.
    private func armHandshakeTimer() {
        guard let oldest = handshakes.oldest else { return }
        let now = monotonicNanos()
        handshakeTimer = scheduleTimer(afterNanos: oldest > now ? oldest - now : 0) { server in
            server.handshakeTimer = nil
            let now = monotonicNanos()
            while let due = server.handshakes.popDue(now) {
                guard let c = server.connections[Int(due.slot)], c.session.id == due.connectionID, c.phase != .open else { continue }
                c.fail(WireError(.handshakeTimeout, "no handshake (preamble and HELLO) within \(server.config.handshakeTimeoutMillis) ms"))
            }
            server.armHandshakeTimer()
        }
    }

    func connectionClosed(_ c: BrokerConnection, reason: Channel.CloseReason) {
        let slot = Int(c.session.slot)
        guard connections[slot] === c else { return }
        core.closed(c.session)
        channels[slot] = nil
        connections[slot] = nil
        logEvent(.debug, c, event: "closed", fields: [], "closed: \(reason)")
        if core.liveSessions == 0, let done = onShutdownComplete {
            onShutdownComplete = nil
            done()
        }
    }

    public var connectionCount: Int { core.liveSessions }

    /// The counters, for tests and the CLI (loop thread only).
    public var statistics: [StatEntry] { core.statEntries() }

    // MARK: Reload

    /// SIGHUP: puts `new`'s access rules and quotas in force (the core cancels what they no
    /// longer allow). Other settings need a restart; a change to them is logged, not applied.
    /// Returns how many subscriptions and consumers were cancelled. Loop thread only.
    @discardableResult
    public func reload(_ new: BrokerConfig) -> Int {
        var rest = new
        rest.access = config.access
        rest.quotas = config.quotas
        if rest != config {
            log.warning("reload: only \"access\" and \"quotas\" are reread; the other changed settings take effect at the next start")
        }
        return core.installAccess(rules: new.access, quotas: new.quotas)
    }

    // MARK: Shutdown

    /// Stops accepting (removing the socket file), tells every client the broker is going away,
    /// flushes what each can take, and calls `done` once all connections are closed (or after the
    /// grace period). Loop thread only.
    public func shutdown(graceNanos: UInt64 = 1_000_000_000, done: @escaping () -> Void) {
        listener?.close()
        listener = nil
        if let rateTimer { loop.cancelTimer(rateTimer) }
        if let wakeTimer { loop.cancelTimer(wakeTimer.id) }
        wakeTimer = nil
        var finished = false
        let lifeline = self.lifeline
        let finish = {
            guard !finished else { return }
            finished = true
            // Everything recorded is written and synced before the broker says it has stopped.
            if lifeline.isAlive { lifeline.server.stopStorage() }
            done()
        }
        onShutdownComplete = finish
        for case let c? in connections { goAway(c, graceNanos: graceNanos) }
        if core.liveSessions == 0 {
            onShutdownComplete = nil
            finish()
            return
        }
        scheduleTimer(afterNanos: graceNanos + 200_000_000) { server in
            server.onShutdownComplete = nil
            finish()
        }
    }

    private func stopStorage() {
        storage?.stop()
        storage = nil
    }

    private func goAway(_ c: BrokerConnection, graceNanos: UInt64 = 1_000_000_000) {
        guard c.session.isOpen else { return }
        c.send(.close(code: ErrorCode.shuttingDown.rawValue, reason: "broker shutting down"))
        c.close(graceNanos: graceNanos)
    }
}

/// What the core asks, carried out on channels.
extension BrokerServer: BrokerOutput {
    @inline(__always)
    public func reserve(_ connection: UInt32, _ count: Int) -> UnsafeMutableRawPointer {
        channels[Int(connection)]!._withUnsafeGuaranteedRef { $0.reserve(count) }
    }

    @inline(__always)
    public func commit(_ connection: UInt32, _ count: Int) -> Bool {
        channels[Int(connection)]!._withUnsafeGuaranteedRef { channel in
            channel.commit(count)
            return channel.isWritable
        }
    }

    public func bufferedBytes(_ connection: UInt32) -> Int {
        connections[Int(connection)]?.channel.bufferedBytes ?? 0
    }

    public func pauseReading(_ connection: UInt32) {
        connections[Int(connection)]?.channel.pauseReading()
    }

    public func resumeReading(_ connection: UInt32) {
        connections[Int(connection)]?.channel.resumeReading()
    }

    public func discardQueued(_ connection: UInt32) {
        connections[Int(connection)]?.channel.discardUnsentFrames()
    }

    public func close(_ connection: UInt32, graceNanos: UInt64) {
        connections[Int(connection)]?.close(graceNanos: graceNanos)
    }

    public func wake(at deadline: UInt64) {
        if let current = wakeTimer {
            if current.at == deadline { return }
            loop.cancelTimer(current.id)
            wakeTimer = nil
        }
        guard deadline != 0 else { return }
        let now = monotonicNanos()
        let id = scheduleTimer(afterNanos: deadline > now ? deadline - now : 0) { server in
            server.wakeTimer = nil
            server.core.timerFired()
        }
        wakeTimer = (deadline, id)
    }

    public func persist(_ batch: StoreBatch) {
        storage?.thread?.submit(batch)
    }

    public func readBack(_ request: PageRequest) {
        storage?.thread?.read(request)
    }

    public func log(_ level: CoreLogLevel, _ connection: UInt32?, event: String, fields: [(String, String)], _ message: String) {
        let logLevel: LogLevel = switch level {
        case .debug: .debug
        case .info: .info
        case .warning: .warning
        }
        if let c = connection.flatMap({ connections[Int($0)] }) {
            logEvent(logLevel, c, event: event, fields: fields, message)
        } else {
            log.log(logLevel, fields: [("event", event)] + fields, message)
        }
    }

    /// One line about a connection: who it is, the event, its own fields, the message. Refusals
    /// a client can repeat are rate-limited per uid (`LogRateLimit`).
    func logEvent(_ level: LogLevel, _ c: BrokerConnection, event: String, fields: [(String, String)], _ message: @autoclosure () -> String) {
        guard level <= log.level else { return }
        let uid = c.credentials.map { "\($0.uid)" } ?? "?"
        let isRefusal = LogRateLimit.limitedEvents.contains(event) || fields.contains { $0 == ("reason", "protocol-error") }
        if isRefusal && !logLimit.admit(event: fields.first { $0.0 == "reason" }?.1 ?? event, uid: uid, now: monotonicNanos()) { return }
        log.log(level, fields: c.logFields + [("event", event)] + fields, message())
    }

    /// Says how many refusal lines the rate limit left out, for each window that ended.
    func reportSuppressedLogLines() {
        for s in logLimit.expired(now: monotonicNanos()) {
            log.log(.warning, fields: [("uid", s.uid), ("event", "log-suppressed"), ("of", s.event), ("suppressed", "\(s.suppressed)")],
                    "\(s.suppressed) more \(s.event) lines for uid \(s.uid) were not logged (at most \(logLimit.burst) per \(logLimit.windowNanos / 1_000_000_000) s)")
        }
    }
}
