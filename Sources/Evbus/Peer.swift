public import EvbusIO
public import EvbusWire
import Glibc
import Synchronization
import EvbusController

/// A connection to an evbus broker: publish, subscribe, and (in later layers) queues and RPC.
///
/// All methods are safe from any thread or task. Publishing does not wait for the broker: frames are
/// batched and written by the peer's event loop; `flush()` waits until the broker has handled
/// everything sent before it. Events for handler-based subscriptions are delivered on the peer's
/// event loop thread, in order; keep handlers short.
public final class Peer: Sendable {
    /// The socket this peer is connected to.
    public let socketPath: String
    public let name: String
    /// The broker's id for this connection (DELIVER frames carry it as the publisher). A new
    /// one after each reconnect.
    public var connectionID: UInt64 { facts.connectionID }
    /// The largest frame the broker accepts (type byte + body), as the current connection's
    /// WELCOME said.
    public var maxFrameBytes: Int { facts.maxFrame }
    /// The broker's name, as the first WELCOME said.
    public let brokerName: String
    public let loop: EventLoop
    /// Runs tasks on this peer's event loop: `Task(executorPreference: peer.executor) { ... }`.
    /// Code that makes many requests or handles many deliveries avoids a thread switch per
    /// message this way (replies resume it on the loop that received them). Keep such code short.
    public let executor: any TaskExecutor

    let core: LoopBound<PeerConnection>
    let outbox: Outbox
    /// Sends ACK/NACK through the outbox.
    let acker: Acker
    /// Numbers this peer's requests (their correlation ids).
    let nextCorrelation = Atomic<UInt64>(1)
    /// Numbers callers waiting on the loop (`waitForConfirms`, control requests), so a cancelled
    /// one can be found there.
    let nextWaiter = Atomic<UInt64>(0)
    /// The current connection's id, frame limit and inbox.
    let facts: ConnectionFacts
    let events: ConnectionEvents
    let nextID = Atomic<UInt32>(1)

    /// The loop every peer uses unless told otherwise: one I/O thread per process.
    public static let sharedLoop: EventLoop = {
        do { return try EventLoop.startThread(name: "evbus-peer") } catch { fatalError("cannot start the evbus peer loop: \(error)") }
    }()

    /// Tuning for one peer.
    public struct Options: Sendable {
        /// Bytes of unsent publishes after which `publish` waits (backpressure).
        public var outboxHighWatermark = 4 << 20
        public var outboxLowWatermark = 1 << 20
        /// Events a subscription buffers unread before the peer stops reading from the broker.
        public var subscriptionBuffer = 10_000
        /// Errors the broker reports for fire-and-forget frames (a refused publish, an ack of an
        /// unknown delivery tag). Called on the peer's event loop.
        public var onAsyncError: (@Sendable (EvbusError) -> Void)? = nil
        /// Mandatory publishes that reached nothing come back here (on the peer's event loop).
        public var onReturn: (@Sendable (ReturnedMessage) -> Void)? = nil
        /// What to do when the connection drops: by default, reconnect and restore everything
        /// (docs/LIBRARY.md, "Reconnecting"); `.never` fails everything with `connection-lost`.
        public var reconnect = ReconnectPolicy.standard
        /// Called on the peer's event loop for each `ConnectionEvent` (as `connectionEvents()` yields them).
        public var onConnectionEvent: (@Sendable (ConnectionEvent) -> Void)? = nil
        /// How long a control request (declare, bind, subscribe, consume, flush, stats, ...)
        /// waits for the broker's answer before it throws `timeout`. The broker may still carry
        /// it out; a subscription or consumer the caller never got is undone (docs/LIBRARY.md,
        /// "Timeouts and cancellation").
        public var controlTimeout: Duration = .seconds(30)
        /// How long a broker that accepted the connection may take to answer HELLO with
        /// WELCOME: `connect` then fails with `cannotConnect`, and a reconnect counts it as a
        /// failed try. A stopped or wedged broker's socket still accepts connections.
        public var handshakeTimeout: Duration = .seconds(10)
        public init() {}
    }

    let subscriptionBuffer: Int

    private init(
        socketPath: String, name: String, welcome: Welcome, loop: EventLoop, core: LoopBound<PeerConnection>,
        outbox: Outbox, acker: Acker, subscriptionBuffer: Int, facts: ConnectionFacts, events: ConnectionEvents
    ) {
        self.facts = facts
        self.events = events
        self.acker = acker
        self.executor = LoopTaskExecutor(loop: loop)
        self.subscriptionBuffer = subscriptionBuffer
        self.socketPath = socketPath
        self.name = name
        self.brokerName = welcome.brokerName
        self.loop = loop
        self.core = core
        self.outbox = outbox
    }

    deinit {
        // Dropped without close(): end the connection abruptly (the broker cleans up on EOF),
        // and stop reconnecting.
        let core = self.core
        // A stopped loop has no connection left to end.
        try? loop.execute { core.value.abandon() }
    }

    /// The connection's changes from now on: disconnected, reconnecting, reconnected, gave up.
    /// The sequence ends when the peer is closed.
    public func connectionEvents() -> AsyncStream<ConnectionEvent> {
        events.stream()
    }

    /// Connects and completes the handshake.
    /// - Parameters:
    ///   - socketPath: nil resolves `$EVBUS_SOCKET`, then `$XDG_RUNTIME_DIR/evbus.sock`, then `/tmp/evbus-<uid>.sock`.
    ///   - name: shown in the broker's logs.
    ///   - loop: the event loop to use; nil uses `Peer.sharedLoop`.
    /// - Throws: `EvbusError` with code `cannotConnect` if no broker answers (or sends no
    ///   WELCOME within `Options.handshakeTimeout`); `CancellationError` at once when the calling
    ///   task is cancelled.
    public static func connect(
        to socketPath: String? = nil, name: String? = nil, loop: EventLoop? = nil, options: Options = Options()
    ) async throws -> Peer {
        let path = SocketPath.resolve(socketPath)
        let name = name ?? "pid-\(getpid())"
        guard name.utf8.count <= WireFormat.maxNameBytes else {
            throw EvbusError(.invalidArgument, "peer name is \(name.utf8.count) bytes; the limit is \(WireFormat.maxNameBytes)")
        }
        let loop = loop ?? sharedLoop
        try Task.checkCancellation()
        let fd: Int32
        do {
            fd = try UnixSocket.connect(path: path)
        } catch let error as IOError {
            let hint = error.errno == ENOENT || error.errno == ECONNREFUSED ? " (is `evbus broker` running?)" : ""
            throw EvbusError(.cannotConnect, "cannot reach the broker at \(path): \(String(cString: strerror(error.errno)))\(hint)")
        } catch {
            throw EvbusError(.cannotConnect, "cannot reach the broker at \(path): \(error)")
        }
        let outbox = Outbox(highWatermark: options.outboxHighWatermark, lowWatermark: options.outboxLowWatermark)
        let facts = ConnectionFacts()
        let events = ConnectionEvents(callback: options.onConnectionEvent)
        // The connection once the loop has made it, so a cancelled task can end its handshake.
        let started = Mutex<LoopBound<PeerConnection>?>(nil)
        let stop: @Sendable () -> Void = { try? loop.execute { started.withLock { $0 }?.value.cancelHandshake() } }
        let (core, welcome) = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation {
                (c: CheckedContinuation<(LoopBound<PeerConnection>, Welcome), any Error>) in
                Self.onLoop(loop, else: c) {
                    do {
                        let channel = try Channel(fd: fd, loop: loop, highWatermark: 1 << 20, lowWatermark: 256 << 10)
                        let connection = PeerConnection(
                            channel: channel, outbox: outbox, socketPath: path, name: name, options: options, events: events, facts: facts)
                        channel.delegate = connection
                        started.withLock { $0 = LoopBound(connection, loop: loop) }
                        connection.start(waiter: c)
                    } catch {
                        Glibc.close(fd)
                        c.resume(throwing: EvbusError(.cannotConnect, "cannot register the connection: \(error)"))
                    }
                }
                if loop.isStopped { Glibc.close(fd) }
                // As for control calls: a cancellation before the loop made the connection found
                // nothing to stop; checked once the start is queued, a stop lands after it.
                if Task.isCancelled { stop() }
            }
        } onCancel: {
            stop()
        }
        // Draining is a nudge: once the loop has stopped there is nothing left to drain into.
        let acker = Acker(outbox: outbox) { try? loop.execute { core.value.drainOutbox() } }
        try? loop.execute { core.value.acker = acker }
        return Peer(
            socketPath: path, name: name, welcome: welcome, loop: loop, core: core, outbox: outbox,
            acker: acker, subscriptionBuffer: options.subscriptionBuffer, facts: facts, events: events)
    }

    // MARK: Publishing

    /// Publishes `payload` to `topic`. Returns once queued (suspending only while the outbox is full).
    /// - Throws: `invalidArgument` for a bad topic or a payload over the frame limit (nothing is sent);
    ///   `closed`/`connectionLost` once the connection is gone.
    public func publish(_ topic: String, _ payload: [UInt8]) async throws {
        let mustWait = try payload.withUnsafeBytes { try enqueuePublish(topic, $0) }
        if mustWait { try await outbox.waitForRoom() }
    }

    /// Publishes UTF-8 text.
    public func publish(_ topic: String, _ text: String) async throws {
        var text = text
        let mustWait = try text.withUTF8 { try enqueuePublish(topic, UnsafeRawBufferPointer($0)) }
        if mustWait { try await outbox.waitForRoom() }
    }

    /// Publishes `payload` with message properties (content type, correlation id, reply-to, ...).
    public func publish(_ topic: String, _ payload: [UInt8], properties: MessageProperties) async throws {
        let block = try Self.encoded(properties)
        let mustWait = try payload.withUnsafeBytes { p in
            try block.withUnsafeBytes { try enqueuePublish(topic, p, propertiesBlock: $0) }
        }
        if mustWait { try await outbox.waitForRoom() }
    }

    /// Publishes UTF-8 text with message properties.
    public func publish(_ topic: String, _ text: String, properties: MessageProperties) async throws {
        try await publish(topic, Array(text.utf8), properties: properties)
    }

    /// `publish` that never suspends: for a caller on the peer's own loop (a handler passing on
    /// what another connection delivered), which must not block the loop it waits on. The payload
    /// is copied before it returns.
    /// - Returns: true when the outbox is now above its high watermark: the caller should stop
    ///   producing until `waitForRoom()` returns (further publishes are still queued meanwhile).
    /// - Throws: as `publish`.
    public func publishWithoutWaiting(_ topic: String, bytes payload: UnsafeRawBufferPointer, properties: MessageProperties? = nil) throws -> Bool {
        guard let properties else { return try enqueuePublish(topic, payload) }
        let block = try Self.encoded(properties)
        return try block.withUnsafeBytes { try enqueuePublish(topic, payload, propertiesBlock: $0) }
    }

    /// `publishWithoutWaiting` from bytes: the topic, and a properties block already encoded as
    /// PROTOCOL.md lays it out (for a relay that builds it from another format without making a
    /// `MessageProperties`). The block is checked as the broker checks it: a malformed one is
    /// refused here (`invalidArgument`), never sent.
    public func publishWithoutWaiting(topic: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, encodedProperties block: UnsafeRawBufferPointer) throws -> Bool {
        try Self.check { () throws(WireError) in
            var r = ByteReader(block)
            _ = try MessageProperties.validate(&r)
            guard r.remaining == 0 else { throw WireError(.malformedFrame, "\(r.remaining) bytes after the properties block") }
        }
        return try enqueuePublish(topic: topic, payload, propertiesBlock: block)
    }

    /// `publishWithoutWaiting(topic:payload:encodedProperties:)` without checking the block again:
    /// for this package's own encoders, whose blocks are valid by construction (the bridge's
    /// `ImportEncoding`, tested against `MessageProperties`). A broken block would make the broker
    /// close this connection, so nothing outside the package may use it.
    package func publishWithoutWaiting(topic: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, wellFormedProperties block: UnsafeRawBufferPointer) throws -> Bool {
        try enqueuePublish(topic: topic, payload, propertiesBlock: block)
    }

    /// Suspends until the outbox is back under its low watermark (at once if it is): after
    /// `publishWithoutWaiting` said it was full. Throws once the peer is closed.
    public func waitForRoom() async throws {
        try await outbox.waitForRoom()
    }

    /// The wire block of `properties`; `invalidArgument` when they cannot travel whole (a string
    /// over 65,535 bytes, too many headers), rather than the cut `encoded()` would make.
    static func encoded(_ properties: MessageProperties) throws(EvbusError) -> [UInt8] {
        if let reason = properties.unsendableReason { throw EvbusError(.invalidArgument, reason) }
        return properties.encoded()
    }

    /// Queues one PUBLISH without properties (the block is a single zero byte, on the stack: the
    /// plain path touches no `MessageProperties` and no array).
    private func enqueuePublish(_ topic: String, _ payload: UnsafeRawBufferPointer) throws -> Bool {
        var none: UInt8 = 0
        return try withUnsafeBytes(of: &none) { try enqueuePublish(topic, payload, propertiesBlock: $0) }
    }

    private func enqueuePublish(_ topic: String, _ payload: UnsafeRawBufferPointer, propertiesBlock: UnsafeRawBufferPointer) throws -> Bool {
        var topic = topic
        return try topic.withUTF8 { try enqueuePublish(topic: UnsafeRawBufferPointer($0), payload, propertiesBlock: propertiesBlock) }
    }

    private func enqueuePublish(topic: UnsafeRawBufferPointer, _ payload: UnsafeRawBufferPointer, propertiesBlock: UnsafeRawBufferPointer) throws -> Bool {
        try Self.check { () throws(WireError) in try TopicRules.validateTopic(topic) }
        let size = PublishEncoder.size(topicCount: topic.count, propertiesCount: propertiesBlock.count, payloadCount: payload.count)
        guard size - 4 <= maxFrameBytes else {
            throw EvbusError(.invalidArgument, wireCode: .frameTooLarge,
                "a \(payload.count)-byte payload makes a \(size - 4)-byte frame; the broker's limit is \(maxFrameBytes)")
        }
        return try admitted(outbox.append(size: size) {
            PublishEncoder.write(into: $0, topic: topic, properties: propertiesBlock, payload: payload)
        })
    }

    /// Acts on what the outbox said to a frame: throws if the peer is closed, has the loop drain the
    /// outbox if this frame is the first of a batch; true when the caller must wait for room.
    func admitted(_ admission: Outbox.Admission) throws -> Bool {
        switch admission {
        case .closed(let error):
            throw error
        case .queued(let scheduleDrain, let full):
            if scheduleDrain {
                let core = self.core
                try loop.execute { core.value.drainOutbox() }
            }
            return full
        }
    }

    /// Runs `body` on the peer's loop with the connection and a waiter for the broker's answer to
    /// `what` (a frame's name). The caller stops waiting at `Options.controlTimeout` (`timeout`)
    /// or when its task is cancelled (`CancellationError`); the request may still take effect.
    /// A task cancelled before the call sends nothing, unless `evenIfCancelled`: stopping
    /// something (unsubscribe, cancel) takes effect locally and is sent all the same.
    func withConnection<T: Sendable>(
        asking what: String, evenIfCancelled: Bool = false,
        _ body: @escaping @Sendable (PeerConnection, ControlWaiter<T>) -> Void
    ) async throws -> T {
        if !evenIfCancelled { try Task.checkCancellation() }
        let number = nextWaiter.add(1, ordering: .relaxed).newValue
        let core = self.core, loop = self.loop
        let stop: @Sendable () -> Void = { try? loop.execute { core.value.controlWaiters.giveUp(number, CancellationError()) } }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
                Self.onLoop(loop, else: c) {
                    let connection = core.value
                    body(connection, connection.controlWaiters.make(number, c, asking: what))
                }
                // A cancellation that came before the waiter was made found nothing to stop:
                // checked once the request is queued on the loop, a stop always lands after it.
                if Task.isCancelled { stop() }
            }
        } onCancel: {
            stop()
        }
    }

    /// Runs `body` on `loop`; if the loop has stopped, fails `c` instead, so no caller waits forever.
    static func onLoop<T>(_ loop: EventLoop, else c: CheckedContinuation<T, any Error>, _ body: @escaping @Sendable () -> Void) {
        do {
            try loop.execute(body)
        } catch {
            c.resume(throwing: EvbusError(.closed, "the peer's event loop has stopped"))
        }
    }

    /// Runs a local check of a broker rule; a violation becomes `invalidArgument` with the wire code.
    static func check(_ rule: () throws(WireError) -> Void) throws(EvbusError) {
        do {
            try rule()
        } catch {
            throw EvbusError(.invalidArgument, wireCode: error.code, error.message)
        }
    }

    /// Waits until the broker has handled everything this peer sent before the call.
    public func flush() async throws {
        try await withConnection(asking: "PING") { $0.ping($1) }
    }

    // MARK: Subscribing

    /// Subscribes to one or more patterns (`*` = one word, `#` = zero or more); iterate the result.
    /// - Throws: `invalidArgument` for a malformed pattern (checked before sending), or `refused`.
    public func subscribe(_ patterns: String...) async throws -> Subscription {
        try await subscribe(patterns)
    }

    public func subscribe(_ patterns: [String]) async throws -> Subscription {
        let core = self.core
        let loop = self.loop
        let queue = EventQueue(capacity: subscriptionBuffer) {
            try? loop.execute { core.value.queueHasRoom() }
        }
        return try await subscribe(patterns, sink: .queue(queue), queue: queue)
    }

    /// Subscribes with a handler called on the peer's event loop for each event, in order.
    public func subscribe(_ patterns: String..., handler: @escaping @Sendable (Event) -> Void) async throws -> Subscription {
        try await subscribe(patterns, sink: .handler(handler), queue: nil)
    }

    /// Stops reading what the broker sends (deliveries, replies, everything) until a matching
    /// `resumeDeliveries()`: the broker's slow-consumer policy then applies to this peer's
    /// subscriptions, as if it read slowly (by default their publishers wait; PROTOCOL.md §8).
    /// For a handler that must not be fed faster than it can pass events on. Called from a
    /// handler, no further frame of the current read is handled. Pauses nest.
    public func pauseDeliveries() {
        onLoopNow { $0.pauseReading() }
    }

    /// Ends one `pauseDeliveries()`; reading resumes when no pause (and no full subscription
    /// buffer) holds it.
    public func resumeDeliveries() {
        onLoopNow { $0.queueHasRoom() }
    }

    /// Runs `body` with the connection: at once from the loop itself (so a handler's pause takes
    /// effect before the next frame), else soon on it; not at all once the loop has stopped.
    private func onLoopNow(_ body: @escaping @Sendable (PeerConnection) -> Void) {
        let core = self.core
        if loop.inEventLoop { body(core.value) } else { try? loop.execute { body(core.value) } }
    }

    /// Subscribes with a zero-copy handler: no allocation per event. The `EventView`'s buffers are
    /// valid only during the call. Called on the peer's event loop, in order.
    public func subscribeViews(_ patterns: String..., handler: @escaping @Sendable (EventView) -> Void) async throws -> Subscription {
        try await subscribe(patterns, sink: .view(handler), queue: nil)
    }

    /// Subscribes with a slow-consumer policy of its own (PROTOCOL.md §8): what the broker does
    /// with this subscription's events while this peer reads too slowly. Iterate the result.
    public func subscribe(_ patterns: [String], policy: SubscriptionPolicy) async throws -> Subscription {
        let core = self.core
        let loop = self.loop
        let queue = EventQueue(capacity: subscriptionBuffer) {
            try? loop.execute { core.value.queueHasRoom() }
        }
        return try await subscribe(patterns, sink: .queue(queue), queue: queue, policy: policy)
    }

    /// A subscription with its own slow-consumer policy and a handler called on the peer's loop.
    public func subscribe(_ patterns: String..., policy: SubscriptionPolicy, handler: @escaping @Sendable (Event) -> Void) async throws -> Subscription {
        try await subscribe(patterns, sink: .handler(handler), queue: nil, policy: policy)
    }

    func subscribe(_ patterns: [String], sink: Sink, queue: EventQueue?, policy: SubscriptionPolicy = .brokerDefault) async throws -> Subscription {
        guard !patterns.isEmpty else { throw EvbusError(.invalidArgument, "subscribe needs at least one pattern") }
        for pattern in patterns {
            try Self.check { () throws(WireError) in try TopicRules.validatePattern(pattern) }
        }
        let ids = patterns.map { _ in nextID.add(1, ordering: .relaxed).oldValue }
        try await withConnection(asking: "SUBSCRIBE") { $0.subscribe(ids, patterns: patterns, policy: policy.code, sink: sink, $1) }
        return Subscription(patterns: patterns, ids: ids, queue: queue, peer: self)
    }

    /// Stops a subscription: no more events are delivered to it and its iteration ends.
    public func unsubscribe(_ subscription: Subscription) async throws {
        let ids = subscription.ids
        try await withConnection(asking: "UNSUBSCRIBE", evenIfCancelled: true) { $0.unsubscribe(ids, $1) }
    }

    // MARK: Stats and close

    /// The broker's counters (see PROTOCOL.md, STATS_REPLY).
    public func brokerStats() async throws -> [StatEntry] {
        let id = nextID.add(1, ordering: .relaxed).oldValue
        let reply: Frame = try await withConnection(asking: "STATS") { $0.request(.stats(requestID: id), id: id, $1) }
        guard case .statsReply(_, let entries) = reply else {
            throw EvbusError(.protocolViolation, "expected STATS_REPLY, got \(reply.type.name)")
        }
        return entries
    }

    /// Sends everything queued, says goodbye, and waits until the broker has closed its end (so
    /// everything published before `close()` has been routed). Iterations end normally.
    public func close() async {
        let core = self.core
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            // A stopped loop closed every connection on it already.
            do { try loop.execute { core.value.close(c) } } catch { c.resume() }
        }
    }
}
