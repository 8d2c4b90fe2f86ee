import EvbusController
import EvbusIO
import Glibc

/// The client's state, on its controller's thread alone (see `NATSClient`).
final class NATSCore {
    struct Server {
        var url: String
        var address: SocketAddress
    }

    struct Subscription {
        var subject: String
        var queueGroup: String?
        var sink: Sink
    }

    /// What a subscription's messages are handed to.
    enum Sink {
        case message(@Sendable (NATSMessage) -> Void)
        /// Zero-copy: the view is valid only during the call.
        case view(@Sendable (NATSMessageView) -> Void)
    }

    let options: NATSClient.Options
    let outbox: NATSOutbox
    private(set) var servers: [Server]
    private let controller: Controller
    private var next = 0
    private var link: NATSLink?
    private var parser = NATSParser()
    private(set) var connectedURL: String?
    private(set) var reconnects = 0
    private var connectedOnce = false
    private var backoff: Duration
    private var closed = false
    private var subscriptions: [UInt64: Subscription] = [:]
    private var nextSid: UInt64 = 1
    /// Requests: one wildcard subscription on `inboxPrefix*`, each reply matched by its last token.
    private let inboxPrefix = "_INBOX.\(UInt64.random(in: 1...UInt64.max))."
    private var inboxSid: UInt64?
    private var nextRequest: UInt64 = 1
    private var requests: [UInt64: (waiter: CheckedContinuation<NATSMessage, any Error>, timer: TimerID)] = [:]
    /// Every PING sent on the current connection, oldest first: the server answers them in
    /// order. A keepalive PING has no waiter, nor has a caller's whose timeout passed (its
    /// entry stays, to take its PONG should it still come).
    private var pongQueue: [(id: UInt64, waiter: CheckedContinuation<Void, any Error>?, timer: TimerID?)] = []
    /// Keepalive PINGs sent since the last PONG, and the timer that sends the next.
    private var pingsOutstanding = 0
    private var keepaliveTimer: TimerID?
    /// The deadline for the server's INFO on a connection just made.
    private var handshakeTimer: TimerID?
    /// Why this side is dropping the current connection (stale, no INFO, a protocol
    /// violation): the reason told, rather than "closed locally".
    private var dropReason: String?
    /// The server's last -ERR on the current connection: the reason its close is told with.
    private var serverError: String?
    /// CONNECT and a PING sent on the current connection: its PONG says the server took CONNECT
    /// (a refused login gets -ERR and a close instead), and only then is the client connected.
    private var awaitingAcceptance = false
    /// The current server's `max_payload` (from its INFO): larger messages are refused here,
    /// as the server would close the connection for one.
    private var maxPayload = NATSCore.defaultMaxPayload
    /// nats-server's default, for an INFO that does not say.
    static let defaultMaxPayload = 1 << 20
    private var connectedWaiters: [(id: UInt64, waiter: CheckedContinuation<Void, any Error>, timer: TimerID)] = []
    /// `pauseReading` calls not yet ended: while above zero, nothing the server sent after the
    /// handshake is handled, and the socket is not read (the server's buffer for us fills).
    private var readPauses = 0

    init(options: NATSClient.Options, servers: [Server], controller: Controller, outbox: NATSOutbox) {
        self.options = options
        self.outbox = outbox
        self.servers = servers
        self.controller = controller
        backoff = options.minBackoff
    }

    private var loop: EventLoop { controller.loop }
    private var bound: LoopBound<NATSCore> { LoopBound(self, loop: loop) }

    static func address(_ url: String) throws(NATSError) -> Server {
        var rest = Substring(url)
        if rest.hasPrefix("nats://") { rest = rest.dropFirst(7) }
        guard let colon = rest.lastIndex(of: ":"), let port = UInt16(rest[rest.index(after: colon)...]), port > 0 else {
            throw NATSError(.invalidArgument, "'\(url)' is not nats://host:port")
        }
        var host = String(rest[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return Server(url: "nats://\(host.contains(":") ? "[\(host)]" : host):\(port)", address: .tcp(host, port))
    }

    // MARK: Connecting

    /// Tries the next server of the list.
    func connectNext() {
        guard !closed, link == nil else { return }
        let server = servers[next % servers.count]
        next += 1
        let me = bound
        let pending = controller.connect(to: server.address, timeout: options.connectTimeout) { NATSLink(core: me, url: server.url) }
        Task {
            do { try await pending.value } catch {
                // Refused, unreachable or silent: the next attempt, after the backoff, tries the next server.
                let reason = (error as? ControllerError)?.message ?? "\(error)"
                try? me.loop.execute {
                    me.value.options.onEvent?(.connectFailed(server: server.url, reason: reason))
                    me.value.scheduleReconnect()
                }
            }
        }
    }

    private func scheduleReconnect() {
        guard !closed else { return }
        let wait = backoff
        backoff = min(backoff * 2, options.maxBackoff)
        loop.scheduleTimer(afterNanos: UInt64(wait.components.seconds) * 1_000_000_000 + UInt64(wait.components.attoseconds / 1_000_000_000)) { [self] in
            connectNext()
        }
    }

    func isCurrent(_ link: NATSLink) -> Bool { link === self.link }

    func linkMade(_ link: NATSLink) {
        guard !closed else {
            link.transport?.abortConnection()
            return
        }
        self.link = link
        parser = NATSParser()
        awaitingAcceptance = false
        let timeout = options.connectTimeout
        handshakeTimer = loop.scheduleTimer(afterNanos: timeout.wholeNanoseconds) { [self] in
            handshakeTimer = nil
            guard link === self.link, connectedURL == nil else { return }
            drop(link, awaitingAcceptance ? "no answer to CONNECT within \(timeout)" : "no INFO from the server within \(timeout)")
        }
    }

    /// Closes the current connection from this side, saying why; the reconnect follows.
    private func drop(_ link: NATSLink, _ reason: String) {
        guard link === self.link else { return }
        dropReason = reason
        link.transport?.abortConnection()
    }

    /// Every `pingInterval` while connected: a PING, or, with `maxPingsOutstanding` of them
    /// unanswered, the connection dropped as stale.
    private func keepalive(_ link: NATSLink) {
        guard link === self.link, connectedURL != nil else { return }
        // While reading is paused the server's PONGs wait unread: the silence is ours.
        if readPauses > 0 {
            pingsOutstanding = 0
            return
        }
        if pingsOutstanding >= options.maxPingsOutstanding {
            return drop(link, "stale connection: \(pingsOutstanding) PINGs unanswered (one every \(options.pingInterval))")
        }
        do { try write(Array("PING\r\n".utf8)) } catch { return }
        pingsOutstanding += 1
        pongQueue.append((0, nil, nil))
    }

    func linkData(_ link: NATSLink, _ bytes: [UInt8]) {
        guard link === self.link else { return }
        parser.append(bytes)
        parseBuffered(link)
    }

    /// Handles the operations read so far, until a pause stops it. The handshake (INFO, then
    /// CONNECT) is never paused: a reconnect while paused still connects.
    private func parseBuffered(_ link: NATSLink) {
        do {
            while link === self.link, readPauses == 0 || connectedURL == nil, let op = try parser.next() { handle(op, link) }
        } catch {
            drop(link, "\(error)")
        }
    }

    func pauseReading() {
        readPauses += 1
        if readPauses == 1, connectedURL != nil { link?.transport?.pauseProducing() }
    }

    func resumeReading() {
        guard readPauses > 0 else { return }
        readPauses -= 1
        guard readPauses == 0, let link else { return }
        link.transport?.resumeProducing()
        // What was read before the pause but not handled yet, after the current work (a resume
        // from inside a handler must not run the next message before that handler returns).
        loop.deferWork { [self] in if readPauses == 0 { parseBuffered(link) } }
    }

    private func handle(_ op: NATSServerOp, _ link: NATSLink) {
        switch op {
        case .info(let fields, let urls):
            if connectedURL == nil && !awaitingAcceptance && fields["tls_required"] == "1" {
                // CONNECT in the clear (credentials and all) would only be garbage to it.
                return drop(link, "the server requires TLS, which this client does not speak (use a NATS leaf node on this host, or a tunnel)")
            }
            if connectedURL == nil && !awaitingAcceptance {
                maxPayload = fields["max_payload"].flatMap(Int.init).flatMap { $0 > 0 ? $0 : nil } ?? Self.defaultMaxPayload
                sendConnect(link)
            }
            discover(urls)
        case .ping:
            link.transport?.write("PONG\r\n")
        case .pong:
            if awaitingAcceptance { return established(link) }
            pingsOutstanding = 0
            guard !pongQueue.isEmpty else { return }
            let p = pongQueue.removeFirst()
            if let timer = p.timer { loop.cancelTimer(timer) }
            p.waiter?.resume()
        case .ok:
            break
        case .err(let message):
            // The server closes the connection after most errors; the reconnect follows.
            serverError = message
            options.onEvent?(.serverError(server: link.url, message: message))
        case .msg(let m):
            parser.withView(m) { deliver($0) }
        }
    }

    /// CONNECT, then a PING whose PONG means it was accepted (`established`).
    private func sendConnect(_ link: NATSLink) {
        var connect = #"{"verbose":false,"pedantic":false,"tls_required":false,"lang":"swift","version":"0.1.0","protocol":1,"headers":true,"no_responders":true,"name":"#
        connect += jsonString(options.name)
        if let user = options.user { connect += #","user":"# + jsonString(user) }
        if let password = options.password { connect += #","pass":"# + jsonString(password) }
        if let token = options.token { connect += #","auth_token":"# + jsonString(token) }
        connect += "}"
        link.transport?.write("CONNECT \(connect)\r\nPING\r\n")
        awaitingAcceptance = true
    }

    /// The server accepted CONNECT: subscriptions are made again, publishes may flow.
    private func established(_ link: NATSLink) {
        awaitingAcceptance = false
        for (sid, s) in subscriptions.sorted(by: { $0.key < $1.key }) {
            link.transport?.write("SUB \(s.subject)\(s.queueGroup.map { " \($0)" } ?? "") \(sid)\r\n")
        }
        if let inboxSid { link.transport?.write("SUB \(inboxPrefix)* \(inboxSid)\r\n") }
        connectedURL = link.url
        if let handshakeTimer { loop.cancelTimer(handshakeTimer) }
        handshakeTimer = nil
        pingsOutstanding = 0
        let interval = options.pingInterval.wholeNanoseconds
        keepaliveTimer = loop.scheduleTimer(afterNanos: interval, everyNanos: interval) { [self] in keepalive(link) }
        outbox.setOpen(true, maxPayload: maxPayload)
        if readPauses > 0 { link.transport?.pauseProducing() }
        if connectedOnce { reconnects += 1 }
        connectedOnce = true
        backoff = options.minBackoff
        options.onEvent?(.connected(server: link.url))
        let waiters = connectedWaiters
        connectedWaiters = []
        for w in waiters {
            loop.cancelTimer(w.timer)
            w.waiter.resume()
        }
    }

    /// Adds cluster URLs a server announced (`ip:port`) to the list, once each.
    private func discover(_ urls: [String]) {
        var added: [String] = []
        for raw in urls {
            guard let server = try? Self.address(raw), !servers.contains(where: { $0.url == server.url }) else { continue }
            servers.append(server)
            added.append(server.url)
        }
        if !added.isEmpty { options.onEvent?(.discovered(servers: added)) }
    }

    func linkLost(_ link: NATSLink, _ reason: ConnectionLost) {
        guard link === self.link else { return }
        self.link = nil
        awaitingAcceptance = false
        stopTimers()
        if outbox.setOpen(false) { options.onEvent?(.drained) }
        let why = dropReason ?? serverError.map { "-ERR \($0)" } ?? "\(reason)"
        dropReason = nil
        serverError = nil
        if let url = connectedURL {
            options.onEvent?(.disconnected(server: url, reason: why))
        } else {
            options.onEvent?(.connectFailed(server: link.url, reason: why))
        }
        connectedURL = nil
        failPings(NATSError(.notConnected, "the connection to the NATS server was lost"))
        scheduleReconnect()
    }

    // MARK: Operations

    func whenConnected(timeout: Duration, _ c: CheckedContinuation<Void, any Error>) {
        if connectedURL != nil { return c.resume() }
        if closed { return c.resume(throwing: NATSError(.closed, "the NATS client is closed")) }
        let id = nextRequest
        nextRequest += 1
        let timer = loop.scheduleTimer(afterNanos: Self.nanos(timeout)) { [self] in
            guard let i = connectedWaiters.firstIndex(where: { $0.id == id }) else { return }
            let w = connectedWaiters.remove(at: i)
            w.waiter.resume(throwing: NATSError(.notConnected, "no NATS server of \(servers.map(\.url)) reachable within \(timeout)"))
        }
        connectedWaiters.append((id, c, timer))
    }

    /// Writes a frame made on this thread, after the publishes queued before it.
    func write(_ frame: [UInt8]) throws(NATSError) {
        guard connectedURL != nil, let transport = link?.transport else {
            throw NATSError(.notConnected, closed ? "the NATS client is closed" : "not connected to a NATS server")
        }
        drainOutbox()
        transport.write(frame)
    }

    /// Writes the publishes queued from other threads (`NATSOutbox`).
    func drainOutbox() {
        let transport = link?.transport
        // Without a connection the bytes are dropped, as a lost socket's are.
        if outbox.drain({ transport?.write($0) }) { options.onEvent?(.drained) }
        if let transport, !transport.isWritable { outbox.setBackedUp(true) }
    }

    /// The socket drained: publishers waiting for room may go on.
    func writeBufferDrained() {
        drainOutbox()
        if link?.transport?.isWritable == true, outbox.setBackedUp(false) { options.onEvent?(.drained) }
    }

    func subscribe(_ subject: String, queueGroup: String?, _ sink: Sink) -> UInt64 {
        let sid = nextSid
        nextSid += 1
        subscriptions[sid] = Subscription(subject: subject, queueGroup: queueGroup, sink: sink)
        if connectedURL != nil { link?.transport?.write("SUB \(subject)\(queueGroup.map { " \($0)" } ?? "") \(sid)\r\n") }
        return sid
    }

    func unsubscribe(_ sid: UInt64) {
        guard subscriptions.removeValue(forKey: sid) != nil else { return }
        if connectedURL != nil { link?.transport?.write("UNSUB \(sid)\r\n") }
    }

    func request(_ subject: String, _ payload: [UInt8], headers: NATSHeaders?, timeout: Duration, _ c: CheckedContinuation<NATSMessage, any Error>) {
        if inboxSid == nil {
            let sid = nextSid
            nextSid += 1
            inboxSid = sid
            if connectedURL != nil { link?.transport?.write("SUB \(inboxPrefix)* \(sid)\r\n") }
        }
        let token = nextRequest
        nextRequest += 1
        do {
            let replyTo = inboxPrefix + "\(token)"
            let headerBytes = try NATSFrame.checkPublish(subject: subject, replyTo: replyTo, headers: headers)
            if connectedURL != nil { try NATSOutbox.check(size: headerBytes + payload.count, maxPayload: maxPayload) }
            var frame: [UInt8] = []
            payload.withUnsafeBytes { p in
                NATSFrame.appendPublish(&frame, subject: subject, payload: p, replyTo: replyTo, headers: headers, headerBytes: headerBytes)
            }
            try write(frame)
        } catch {
            return c.resume(throwing: error)
        }
        let timer = loop.scheduleTimer(afterNanos: Self.nanos(timeout)) { [self] in
            guard let r = requests.removeValue(forKey: token) else { return }
            r.waiter.resume(throwing: NATSError(.timeout, "no reply to a request on \(subject) within \(timeout)"))
        }
        requests[token] = (c, timer)
    }

    func ping(timeout: Duration, _ c: CheckedContinuation<Void, any Error>) {
        do { try write(Array("PING\r\n".utf8)) } catch { return c.resume(throwing: error) }
        let id = nextRequest
        nextRequest += 1
        let timer = loop.scheduleTimer(afterNanos: Self.nanos(timeout)) { [self] in
            guard let i = pongQueue.firstIndex(where: { $0.id == id }), let waiter = pongQueue[i].waiter else { return }
            pongQueue[i].waiter = nil
            pongQueue[i].timer = nil
            waiter.resume(throwing: NATSError(.timeout, "no PONG within \(timeout)"))
        }
        pongQueue.append((id, c, timer))
    }

    /// The PINGs in flight will get no PONG: their callers are told `error`.
    private func failPings(_ error: NATSError) {
        let pings = pongQueue
        pongQueue = []
        for p in pings {
            if let timer = p.timer { loop.cancelTimer(timer) }
            p.waiter?.resume(throwing: error)
        }
    }

    private func stopTimers() {
        for timer in [handshakeTimer, keepaliveTimer].compactMap({ $0 }) { loop.cancelTimer(timer) }
        handshakeTimer = nil
        keepaliveTimer = nil
    }

    private func deliver(_ view: NATSMessageView) {
        if view.sid == inboxSid {
            let m = view.message()
            guard m.subject.hasPrefix(inboxPrefix), let token = UInt64(m.subject.dropFirst(inboxPrefix.count)),
                  let r = requests.removeValue(forKey: token) else { return }
            loop.cancelTimer(r.timer)
            if m.headers?.status == 503 {
                r.waiter.resume(throwing: NATSError(.noResponders, "no responders on the request's subject"))
            } else {
                r.waiter.resume(returning: m)
            }
            return
        }
        switch subscriptions[view.sid]?.sink {
        case .message(let handler)?: handler(view.message())
        case .view(let handler)?: handler(view)
        case nil: break  // unsubscribed while the server was sending
        }
    }

    func close() {
        closed = true
        drainOutbox()
        outbox.setOpen(false, closed: true)
        link?.transport?.loseConnection()
        link = nil
        connectedURL = nil
        stopTimers()
        let error = NATSError(.closed, "the NATS client is closed")
        for (_, r) in requests { loop.cancelTimer(r.timer); r.waiter.resume(throwing: error) }
        requests = [:]
        failPings(error)
        for w in connectedWaiters { loop.cancelTimer(w.timer); w.waiter.resume(throwing: error) }
        connectedWaiters = []
    }

    // MARK: Frames

    static func nanos(_ d: Duration) -> UInt64 {
        UInt64(max(0, d.components.seconds)) * 1_000_000_000 + UInt64(max(0, d.components.attoseconds) / 1_000_000_000)
    }

    private func jsonString(_ s: String) -> String {
        var out = "\""
        for c in s.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            default:
                if c.value < 0x20 { out += "\\u" + String(repeating: "0", count: 4 - String(c.value, radix: 16).count) + String(c.value, radix: 16) } else { out.unicodeScalars.append(c) }
            }
        }
        return out + "\""
    }
}

/// One TCP connection to a server, handing its events to the core.
final class NATSLink: StreamProtocol {
    let core: LoopBound<NATSCore>
    let url: String
    private(set) var transport: StreamTransport?

    init(core: LoopBound<NATSCore>, url: String) {
        self.core = core
        self.url = url
    }

    func connectionMade(_ transport: StreamTransport) {
        self.transport = transport
        core.value.linkMade(self)
    }

    func dataReceived(_ data: [UInt8]) { core.value.linkData(self, data) }

    func connectionLost(_ reason: ConnectionLost) {
        transport = nil
        core.value.linkLost(self, reason)
    }

    func writeBufferDrained() {
        if core.value.isCurrent(self) { core.value.writeBufferDrained() }
    }
}
