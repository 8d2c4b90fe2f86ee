public import EvbusController
import EvbusIO
import Synchronization

/// A NATS client: TCP to any of a list of `nats://host:port` servers, the text protocol with
/// headers (HPUB/HMSG), PING/PONG (and a keepalive that drops a silent server), an optional
/// user/password or token login, requests through one wildcard inbox, and reconnection with
/// backoff to any known server (the list, plus the cluster URLs servers announce in INFO), after
/// which every subscription is made again. All its state lives on one controller's thread.
public final class NATSClient: Sendable {
    public struct Options: Sendable {
        public var servers: [String]
        public var name: String
        /// Waits between connection attempts: doubling from `minBackoff` to `maxBackoff`.
        public var minBackoff: Duration = .milliseconds(50)
        public var maxBackoff: Duration = .seconds(2)
        /// How long the TCP connect may take, and then the server's INFO: a server stopped with
        /// its port open, or a host gone behind a network that drops packets, is given up and
        /// the next one tried (the kernel alone would wait minutes, or for ever).
        public var connectTimeout: Duration = .seconds(2)
        /// Keepalive while connected: a PING this often, and the connection closed as stale when
        /// `maxPingsOutstanding` of them are unanswered at the next (a wedged server, or a link
        /// that died without a reset: TCP alone never notices while nothing is sent). Then the
        /// client reconnects like after any loss. The defaults are NATS's own clients'.
        public var pingInterval: Duration = .seconds(120)
        public var maxPingsOutstanding = 2
        /// Credentials sent in CONNECT, for a server that requires them: a user and password, or
        /// a token. (Without TLS they cross the network in the clear, as with any NATS client.)
        public var user: String?
        public var password: String?
        public var token: String?
        /// Told about every connection state change, on the client's thread.
        public var onEvent: (@Sendable (Event) -> Void)?

        public init(servers: [String], name: String = "evbus") {
            self.servers = servers
            self.name = name
        }
    }

    public enum Event: Sendable, Equatable {
        case connected(server: String)
        case disconnected(server: String, reason: String)
        /// One attempt failed (refused, no answer within `connectTimeout`, no INFO); the next
        /// follows after the backoff.
        case connectFailed(server: String, reason: String)
        /// The server sent -ERR (a refused login, a permission or payload violation). Most
        /// errors end the connection: `disconnected` follows with this as its reason, or
        /// `connectFailed` for a refused login (the client is connected only once the server
        /// has answered the PING sent after CONNECT).
        case serverError(server: String, message: String)
        case discovered(servers: [String])
        /// `isBackedUp` ended: the socket drained, or the connection was lost (publishes then fail
        /// with `notConnected` instead of waiting). Told after every spell of `isBackedUp`.
        case drained
    }

    public let options: Options
    let controller: Controller
    private let ownsController: Bool
    private let core: LoopBound<NATSCore>
    private let outbox = NATSOutbox()

    /// Starts connecting at once (and keeps trying, with backoff, until `close`).
    /// - Parameter controller: the controller whose thread runs the client (many clients may
    ///   share one); by default the client makes its own, and stops it at `close`.
    /// - Throws: `invalidArgument` for a server URL that is not `nats://host:port` or `host:port`.
    public init(_ options: Options, controller: Controller? = nil) throws {
        let parsed = try options.servers.map { s throws(NATSError) in try NATSCore.address(s) }
        guard !parsed.isEmpty else { throw NATSError(.invalidArgument, "no NATS server given") }
        guard options.pingInterval > .zero, options.connectTimeout > .zero, options.maxPingsOutstanding >= 1 else {
            throw NATSError(.invalidArgument, "pingInterval and connectTimeout must be above zero, maxPingsOutstanding at least 1")
        }
        self.options = options
        ownsController = controller == nil
        self.controller = try controller ?? Controller(name: "nats-\(options.name)", idleSpin: .zero)
        let controller = self.controller
        let outbox = self.outbox
        core = try controller.loop.runAndWait {
            let core = NATSCore(options: options, servers: parsed, controller: controller, outbox: outbox)
            core.connectNext()
            return LoopBound(core, loop: controller.loop)
        }
    }

    private func onLoop<T: Sendable>(_ body: @escaping @Sendable (NATSCore, CheckedContinuation<T, any Error>) -> Void) async throws -> T {
        let core = self.core
        return try await withCheckedThrowingContinuation { c in
            do { try controller.loop.execute { body(core.value, c) } } catch { c.resume(throwing: NATSError(.closed, "the NATS client is closed")) }
        }
    }

    /// Suspends until connected (at once if it is), or fails after `timeout`.
    public func waitUntilConnected(timeout: Duration = .seconds(10)) async throws {
        try await onLoop { (core, c: CheckedContinuation<Void, any Error>) in core.whenConnected(timeout: timeout, c) }
    }

    /// The server it is connected to (nil while disconnected), every server it knows, and how
    /// many times it has connected again after losing a connection.
    public func state() async throws -> (connected: String?, known: [String], reconnects: Int) {
        try await onLoop { core, c in c.resume(returning: (core.connectedURL, core.servers.map(\.url), core.reconnects)) }
    }

    /// Publishes: the frame is queued at once, and written with every other publish queued
    /// meanwhile by the client's thread, in the order they were queued. Suspends only while the
    /// socket is backed up (the server reads slower than this client publishes). Throws
    /// `notConnected` while no server is connected (the caller decides whether to wait, buffer
    /// or drop), `invalidArgument` for an unusable subject or header, `payloadTooLarge` for a
    /// message (headers and payload) over the server's `max_payload`. Like NATS itself, at most
    /// once: a frame queued just before the connection is lost is lost with it.
    public func publish(_ subject: String, _ payload: [UInt8], replyTo: String? = nil, headers: NATSHeaders? = nil) async throws {
        if try queue(subject, payload, replyTo: replyTo, headers: headers) { await outbox.waitUntilRoom() }
    }

    /// The server is reading slower than this client publishes: publishes queued now wait in
    /// memory (`publish` would suspend). `.drained` is told when this ends.
    public var isBackedUp: Bool { outbox.isFull }

    /// Connected to a server now (publishes are accepted); readable from any thread.
    public var isConnected: Bool { outbox.isOpen }

    /// `publish` that never suspends, even while the socket is backed up: for a handler on the
    /// client's own thread (a reply to a request), or a caller that bounds its own rate.
    public func publishWithoutWaiting(_ subject: String, _ payload: [UInt8], replyTo: String? = nil, headers: NATSHeaders? = nil) throws(NATSError) {
        _ = try queue(subject, payload, replyTo: replyTo, headers: headers)
    }

    /// `publishWithoutWaiting` from bytes the caller does not own (they are copied before it returns).
    public func publishWithoutWaiting(_ subject: String, bytes payload: UnsafeRawBufferPointer, replyTo: String? = nil, headers: NATSHeaders? = nil) throws(NATSError) {
        _ = try queue(subject, payload, replyTo: replyTo, headers: headers)
    }

    /// `publishWithoutWaiting` from bytes: the subject, and a header block the caller encoded as
    /// HPUB carries it (`NATS/1.0\r\n`, `Name: value\r\n` lines, `\r\n`), for a relay that makes
    /// it from another format without `NATSHeaders`. Both are checked as `publish` checks them
    /// (`invalidArgument`: nothing is sent).
    public func publishWithoutWaiting(subject: UnsafeRawBufferPointer, headerBlock: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer) throws(NATSError) {
        try NATSFrame.checkSubject(subject, wildcards: false)
        try NATSFrame.checkHeaderBlock(headerBlock)
        _ = try queue(size: headerBlock.count + payload.count) { NATSFrame.appendPublish(&$0, subject: subject, headerBlock: headerBlock, payload: payload) }
    }

    private func queue(_ subject: String, _ payload: [UInt8], replyTo: String?, headers: NATSHeaders?) throws(NATSError) -> Bool {
        let queued = payload.withUnsafeBytes { p in Result { () throws(NATSError) in try queue(subject, p, replyTo: replyTo, headers: headers) } }
        return try queued.get()
    }

    /// Queues the frame; true when the publisher should wait for room.
    private func queue(_ subject: String, _ payload: UnsafeRawBufferPointer, replyTo: String?, headers: NATSHeaders?) throws(NATSError) -> Bool {
        let headerBytes = try NATSFrame.checkPublish(subject: subject, replyTo: replyTo, headers: headers)
        return try queue(size: headerBytes + payload.count) { out in
            NATSFrame.appendPublish(&out, subject: subject, payload: payload, replyTo: replyTo, headers: headers, headerBytes: headerBytes)
        }
    }

    /// Queues what `write` appends, a message of `size` bytes; true when the publisher should
    /// wait for room.
    private func queue(size: Int, _ write: (inout [UInt8]) -> Void) throws(NATSError) -> Bool {
        let (wake, mustWait) = try outbox.append(size: size, write)
        if wake {
            let core = self.core
            do { try controller.loop.execute { core.value.drainOutbox() } } catch {
                throw NATSError(.closed, "the NATS client is closed")
            }
        }
        return mustWait
    }

    /// Stops handling what the server sends (deliveries, replies, PINGs) and reading its socket,
    /// until a matching `resumeDeliveries()`; pauses nest. For a handler whose messages go on to
    /// something slower: the server buffers for this client meanwhile, and, as for any slow NATS
    /// consumer, disconnects it if the pause outlasts its limits (`max_pending`, the write
    /// deadline). Called from a handler, no further message of the current read is handled. The
    /// handshake of a reconnection is not paused.
    public func pauseDeliveries() {
        onLoopNow { $0.pauseReading() }
    }

    /// Ends one `pauseDeliveries()`.
    public func resumeDeliveries() {
        onLoopNow { $0.resumeReading() }
    }

    /// Runs `body` with the core: at once from the client's own thread (so a handler's pause
    /// takes effect before the next message), else soon on it; not at all once it has stopped.
    private func onLoopNow(_ body: @escaping @Sendable (NATSCore) -> Void) {
        let core = self.core
        if controller.loop.inEventLoop { body(core.value) } else { try? controller.loop.execute { body(core.value) } }
    }

    /// Subscribes (again after every reconnect); `handler` runs on the client's thread, in order.
    /// - Returns: the subscription id, for `unsubscribe`.
    @discardableResult
    public func subscribe(_ subject: String, queueGroup: String? = nil, _ handler: @escaping @Sendable (NATSMessage) -> Void) async throws -> UInt64 {
        try await subscribe(subject, queueGroup: queueGroup, .message(handler))
    }

    /// Subscribes with a zero-copy handler: each message is seen where it lies in the read buffer,
    /// with no allocation; the view is valid only during the call. On the client's thread, in order.
    @discardableResult
    public func subscribeViews(_ subject: String, queueGroup: String? = nil, _ handler: @escaping @Sendable (NATSMessageView) -> Void) async throws -> UInt64 {
        try await subscribe(subject, queueGroup: queueGroup, .view(handler))
    }

    private func subscribe(_ subject: String, queueGroup: String?, _ sink: NATSCore.Sink) async throws -> UInt64 {
        try NATSFrame.checkSubject(subject, wildcards: true)
        return try await onLoop { core, c in c.resume(returning: core.subscribe(subject, queueGroup: queueGroup, sink)) }
    }

    public func unsubscribe(_ sid: UInt64) async throws {
        try await onLoop { (core, c: CheckedContinuation<Void, any Error>) in
            core.unsubscribe(sid)
            c.resume()
        }
    }

    /// Sends a request and waits for the first reply. `noResponders` when the server says no
    /// one subscribes (status 503), `timeout` when no reply comes in time; refused as `publish`
    /// refuses (`invalidArgument`, `payloadTooLarge`, `notConnected`).
    public func request(_ subject: String, _ payload: [UInt8], headers: NATSHeaders? = nil, timeout: Duration = .seconds(5)) async throws -> NATSMessage {
        try NATSFrame.checkSubject(subject, wildcards: false)
        if let headers { _ = try headers.encodedCount() }
        return try await onLoop { core, c in core.request(subject, payload, headers: headers, timeout: timeout, c) }
    }

    /// A PING answered by a PONG: everything sent before it has been processed by the server.
    public func flush(timeout: Duration = .seconds(5)) async throws {
        try await onLoop { (core, c: CheckedContinuation<Void, any Error>) in core.ping(timeout: timeout, c) }
    }

    /// Closes the connection and stops reconnecting; waiting calls fail with `closed`.
    public func close() async {
        _ = try? await onLoop { (core, c: CheckedContinuation<Void, any Error>) in
            core.close()
            c.resume()
        }
        guard ownsController else { return }
        controller.shutdown()
        await controller.stopped()
    }
}
