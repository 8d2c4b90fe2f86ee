public import EvbusIO
public import EvbusWire
import Glibc

/// The broker on its event loop: accepts connections, owns the routing table, delivers.
/// The only place where routing meets I/O. Loop-bound: create and use it on `loop`'s thread.
public final class BrokerServer {
    public let config: BrokerConfig
    public let socketPath: String
    let loop: EventLoop
    let log: Logger
    // Hot-path state below is only touched on the loop thread, one access at a time; dynamic
    // exclusivity checks on it cost more than the work itself (measured with perf), so they are off.
    @exclusivity(unchecked) var stats = BrokerStats()
    /// Exchanges, queues and bindings; `topology.defaultTopic` also holds plain subscriptions.
    let topology = Topology()
    let defaultTopicName = Array("amq.topic".utf8)
    /// Reused buffers of the queue paths (loop thread only).
    @exclusivity(unchecked) var droppedScratch: [StoredMessage] = []
    @exclusivity(unchecked) var touchedQueues: [MessageQueue] = []
    /// A queue whose consumers' ACKs made room during this read batch (see `ack`).
    @exclusivity(unchecked) var pendingDispatch: MessageQueue?
    /// The route of a publish to an inbox, rewritten in place for each one (see `publishTo`).
    @exclusivity(unchecked) var inboxRoute = [RouteTarget(connection: 0, subscription: Inbox.subscriptionID)]
    /// How deep dead letters are nested right now (a cycle guard).
    var deadLetterDepth = 0
    var lastRateSample = monotonicNanos()
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

    private var listener: Listener?
    /// Indexed by slot, the number routing targets use; freed slots are reused.
    @exclusivity(unchecked) private(set) var connections: [BrokerConnection?] = []
    private var freeSlots: [UInt32] = []
    /// Connection id → slot, for inboxes (`amq.inbox.<id>`).
    @exclusivity(unchecked) var slotsByID: [UInt64: UInt32] = [:]
    private var liveConnections = 0
    private var nextConnectionID: UInt64 = 1
    var onShutdownComplete: (() -> Void)?

    /// Binds the socket and starts accepting. Refuses to start over a live broker; replaces a stale
    /// socket file; refuses to replace a file that is not a socket. Loop thread only.
    public init(config: BrokerConfig, loop: EventLoop, log: Logger) throws {
        self.config = config
        self.loop = loop
        self.log = log
        socketPath = SocketPath.resolve(config.socketPath)
        try Self.clearStaleSocket(socketPath, log: log)
        listener = try Listener(
            path: socketPath, mode: config.socketMode, loop: loop,
            onAccept: { [unowned self] fd in accept(fd) },
            onError: { [log] error in log.error("accept: \(error)") })
        try declareConfigured()
        rateTimer = scheduleTimer(afterNanos: 1_000_000_000, everyNanos: 1_000_000_000) { server in
            let now = monotonicNanos()
            server.topology.sampleRates(elapsedNanos: now - server.lastRateSample)
            server.lastRateSample = now
        }
        log.info("listening on \(socketPath) (policy \(config.slowConsumerPolicy.rawValue), max frame \(config.maxFrameBytes) bytes)")
    }

    /// Creates the exchanges, queues and bindings the config declares.
    private func declareConfigured() throws {
        do {
            try topology.declare(config)
        } catch {
            throw StartError(description: "config: \(error.keyPath): \(error.reason)")
        }
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
            close(fd)
            return
        }
        let slot: UInt32
        if let reused = freeSlots.popLast() {
            slot = reused
        } else {
            slot = UInt32(connections.count)
            connections.append(nil)
        }
        let connection = BrokerConnection(id: nextConnectionID, slot: slot, channel: channel, credentials: credentials, server: self)
        nextConnectionID += 1
        connections[Int(slot)] = connection
        slotsByID[connection.id] = slot
        liveConnections += 1
        stats.connectionsTotal += 1
        channel.delegate = connection
        if onShutdownComplete != nil { goAway(connection) }
        // A silent client must not hold a connection forever. The timer names the connection by slot
        // and id: a weak reference would give every connection a refcount side table, which made
        // all its retains and releases take the slow path (measured: -30% pub/sub throughput).
        let id = connection.id
        scheduleTimer(afterNanos: UInt64(config.handshakeTimeoutMillis) * 1_000_000) { server in
            guard let c = server.connections[Int(slot)], c.id == id, c.phase == .preamble || c.phase == .hello else { return }
            c.fail(WireError(.handshakeTimeout, "no handshake (preamble and HELLO) within \(server.config.handshakeTimeoutMillis) ms"))
        }
    }

    func connectionClosed(_ c: BrokerConnection, reason: Channel.CloseReason) {
        guard connections[Int(c.slot)] === c else { return }
        topology.defaultTopic.topics.removeAll(connection: c.slot, subscriptions: c.subscriptions)
        c.subscriptions.removeAll()
        releaseQueues(of: c)
        abandonRequests(of: c)
        releasePublishers(blockedOn: c)
        connections[Int(c.slot)] = nil
        slotsByID[c.id] = nil
        freeSlots.append(c.slot)
        liveConnections -= 1
        log.debug("\(c.label) closed: \(reason)")
        if liveConnections == 0, let done = onShutdownComplete {
            onShutdownComplete = nil
            done()
        }
    }

    public var connectionCount: Int { liveConnections }

    // MARK: Subscriptions

    func subscribe(_ c: BrokerConnection, id: UInt32, pattern: String) throws(WireError) {
        guard id != Inbox.subscriptionID else {
            throw WireError(.duplicateSubscription, "subscription id 0 is reserved: DELIVER frames with id 0 are replies to this connection's inbox")
        }
        guard c.subscriptions.count < config.maxSubscriptionsPerConnection || c.subscriptions.contains(id) else {
            throw WireError(.tooManySubscriptions, "this connection already holds \(c.subscriptions.count) subscriptions, the limit")
        }
        guard c.consumers[id] == nil else {
            throw WireError(.duplicateSubscription, "id \(id) is already in use by a consumer on this connection")
        }
        try topology.defaultTopic.topics.subscribe(pattern, RouteTarget(connection: c.slot, subscription: id))
        c.subscriptions.insert(id)
    }

    func unsubscribe(_ c: BrokerConnection, id: UInt32) throws(WireError) {
        try topology.defaultTopic.topics.unsubscribe(RouteTarget(connection: c.slot, subscription: id))
        c.subscriptions.remove(id)
    }

    func statEntries() -> [StatEntry] {
        stats.entries(
            connections: liveConnections, subscriptions: topology.defaultTopic.topics.subscriptionCount,
            exchanges: topology.exchanges.count, queues: topology.liveQueues.count)
    }

    /// The counters, for tests and the CLI (loop thread only).
    public var statistics: [StatEntry] { statEntries() }

    // MARK: Shutdown

    /// Stops accepting (removing the socket file), tells every client the broker is going away,
    /// flushes what each can take, and calls `done` once all connections are closed (or after the
    /// grace period). Loop thread only.
    public func shutdown(graceNanos: UInt64 = 1_000_000_000, done: @escaping () -> Void) {
        listener?.close()
        listener = nil
        if let rateTimer { loop.cancelTimer(rateTimer) }
        var finished = false
        let finish = { if !finished { finished = true; done() } }
        onShutdownComplete = finish
        for case let c? in connections { goAway(c, graceNanos: graceNanos) }
        if liveConnections == 0 {
            onShutdownComplete = nil
            finish()
            return
        }
        scheduleTimer(afterNanos: graceNanos + 200_000_000) { server in
            server.onShutdownComplete = nil
            finish()
        }
    }

    private func goAway(_ c: BrokerConnection, graceNanos: UInt64 = 1_000_000_000) {
        guard c.phase != .closing else { return }
        c.send(.close(code: ErrorCode.shuttingDown.rawValue, reason: "broker shutting down"))
        c.phase = .closing
        c.channel.closeAfterFlush(graceNanos: graceNanos)
    }
}
