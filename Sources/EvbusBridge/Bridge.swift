import Evbus
import EvbusIO
import EvbusNATS
import Glibc
import Synchronization

/// What a bridge has done, for its log and `evbus bridge`'s SIGUSR1.
public struct BridgeCounters: Sendable, Equatable, CustomStringConvertible {
    public var exported: UInt64 = 0
    public var imported: UInt64 = 0
    /// Exports dropped while NATS was unreachable (`outage.mode` "drop", or a full buffer), or
    /// that NATS could not carry (a header name it refuses); imports the local broker could not
    /// take (a header longer than an evbus string holds, or the broker gone). Each refusal is
    /// also logged with its reason (`export-dropped`, `import-dropped`).
    public var dropped: UInt64 = 0
    /// Exports held while NATS was unreachable and sent after.
    public var buffered: UInt64 = 0
    /// Messages not passed on because they would have gone round in a loop.
    public var loopsStopped: UInt64 = 0
    public var natsReconnects: UInt64 = 0

    public var description: String {
        "exported=\(exported) imported=\(imported) dropped=\(dropped) buffered=\(buffered) loops_stopped=\(loopsStopped) nats_reconnects=\(natsReconnects)"
    }
}

/// The evbus ⇄ NATS bridge (docs/BRIDGE.md): an ordinary evbus peer that also holds a NATS
/// connection. Local messages matching `export` go to NATS under the prefix, with their
/// properties and their publisher's identity as headers; NATS messages matching `import` are
/// published locally. Loops are cut by an origin header and by never exporting what was imported.
public final class Bridge: Sendable {
    /// Headers the bridge sets on NATS messages.
    public enum Header {
        public static let origin = "Evbus-Origin"
        /// The local publisher's identity, one line: `RemotePublisher`'s header.
        public static let publisher = RemotePublisher.header
        public static let contentType = "Evbus-Content-Type"
        public static let correlationID = "Evbus-Correlation-Id"
        public static let messageID = "Evbus-Message-Id"
        public static let timestamp = "Evbus-Timestamp"
        /// Set (to the origin) on messages the bridge published locally: never exported again.
        public static let imported = "evbus-bridge-origin"
        /// On a service reply: the local call failed; the value is its code (`no-responder`,
        /// `timeout`, a remote handler's own code), the payload its message.
        public static let error = "Evbus-Error"
    }

    public let config: BridgeConfig
    private let log: @Sendable (String) -> Void
    private let counts = Mutex(BridgeCounters())
    /// Reading from the local broker is paused while NATS is backed up.
    private let paused = Mutex(false)
    /// Exports held while NATS is unreachable (`outage.mode` "buffer").
    private let pending = Mutex<[HeldExport]>([])
    /// Which of an outage's failed attempts to connect to NATS are logged.
    private let outage = Mutex(OutageLog())
    /// Imports are not read from NATS while the local broker's outbox is full.
    private let importsPaused = Atomic<Bool>(false)
    private let running = Mutex<(peer: Peer?, nats: NATSClient?, controller: Controller?, loop: EventLoop?)>((nil, nil, nil, nil))

    /// `log` gets each state change and refusal as logfmt fields (`event=import-dropped
    /// topic=a.b reason="…"`), for `Logger.log(_:logfmt:)`.
    public init(config: BridgeConfig, log: @escaping @Sendable (String) -> Void) {
        self.config = config
        self.log = log
    }

    public var counters: BridgeCounters { counts.withLock { $0 } }

    /// The local queue the bridge answers with its counters and NATS state.
    public var statsQueue: String { "evbus.bridge.\(config.name).stats" }

    /// Connects to the local broker and to NATS, subscribes both ways, and returns; the bridge
    /// then runs until `stop()`. Both connections reconnect by themselves.
    public func start() async throws {
        var options = config.nats
        options.onEvent = { [self] event in
            switch event {
            case .connected(let server):
                outage.withLock { $0.connectedNow() }
                log("event=nats-connected server=\(Logger.quoted(server))")
                flushPending()
            case .disconnected(let server, let reason):
                counts.withLock { $0.natsReconnects += 1 }
                outage.withLock { $0.connected = false }
                log("event=nats-disconnected server=\(Logger.quoted(server)) reason=\(Logger.quoted("\(reason)"))")
            case .serverError(let server, let message):
                let (logs, attempt) = outage.withLock { ($0.logsError, $0.currentAttempt) }
                guard logs else { return }
                log("event=nats-error server=\(Logger.quoted(server)) message=\(Logger.quoted(message))" + (attempt.map { " attempt=\($0)" } ?? ""))
            case .connectFailed(let server, let reason):
                guard let attempt = outage.withLock({ $0.failed() }) else { return }
                log("event=nats-connect-failed server=\(Logger.quoted(server)) reason=\(Logger.quoted(reason)) attempt=\(attempt)")
            case .discovered(let servers):
                log("event=nats-servers-discovered servers=\(Logger.quoted(servers.joined(separator: ",")))")
            case .drained:
                flushPending()
                resumeExports()
            }
        }
        // One thread for both connections: a message crosses the bridge, either way, without a
        // thread hand-off (the loop's own queue takes the writes). Its own thread, too: beside
        // other peers in one process (the bench, a test) the bridge does not share theirs.
        let loop = try EventLoop.startThread(name: "bridge-\(config.name)")
        let controller: Controller
        let nats: NATSClient
        do {
            controller = try Controller(name: "bridge-\(config.name)", loop: loop)
            nats = try NATSClient(options, controller: controller)
        } catch {
            loop.stopAndJoin()
            throw error
        }
        var peerOptions = Peer.Options()
        peerOptions.onConnectionEvent = { [log] e in log(Self.logLine(e)) }
        let peer: Peer
        do {
            peer = try await Peer.connect(to: config.socket, name: "evbus-bridge-\(config.name)", loop: loop, options: peerOptions)
        } catch {
            await Self.stop(nats, controller, loop)
            throw error
        }
        running.withLock { $0 = (peer, nats, controller, loop) }
        let subjectPrefix = Array((config.mapping.prefix + ".").utf8)
        try? await nats.waitUntilConnected(timeout: .seconds(5))  // not fatal: it keeps trying
        for (_, subject) in config.imports {
            let name = Array(config.name.utf8), encoding = ImportEncoding()
            try await nats.subscribeViews(subject) { [self] m in importMessage(m, encoding, name: name, prefix: subjectPrefix, peer: peer, nats: nats) }
        }
        for (queue, subject) in config.exportServices {
            try await nats.subscribe(subject, queueGroup: "evbus-bridge") { [self] m in serve(m, queue: queue, peer: peer, nats: nats) }
        }
        for (subject, queue) in config.importServices {
            _ = try await peer.respond(on: queue, prefetch: 64) { [self] (request: Request) async throws -> [UInt8] in
                try await forward(request, to: subject, nats: nats)
            }
        }
        for (queue, stream, subject) in config.durableExports {
            let export = JetStreamExport(queue: queue, stream: stream, subject: subject, log: log)
            _ = try await export.start(peer: peer, nats: nats, onExported: { [self] in counts.withLock { $0.exported += 1 } },
                                       onRefused: { [self] in counts.withLock { $0.dropped += 1 } })
        }
        // Its state on request: `evbus rpc evbus.bridge.<name>.stats ''` prints it.
        _ = try await peer.respond(on: statsQueue) { [self] (_: Request) async throws -> [UInt8] in
            let state = try? await nats.state()
            return Array("\(counters) nats=\(state?.connected ?? "disconnected") known_servers=\(state?.known.count ?? 0)".utf8)
        }
        for (index, (pattern, _)) in config.exports.enumerated() {
            // A topic matching several export patterns arrives once per subscription: only the
            // first pattern it matches exports it.
            let earlier = config.exports.prefix(index).map { TopicPattern($0.topic) }
            // On the peer's loop, synchronously: no task or stream between the socket and NATS.
            _ = try await peer.subscribeViews(pattern) { [self] view in
                guard !earlier.contains(where: { $0.matches(view.topicBytes) }) else { return }
                export(view, prefix: subjectPrefix, peer: peer, nats: nats)
            }
        }
        try? await nats.flush()  // the server has our subscriptions when we say "started" (if connected)
        log("event=started name=\(Logger.quoted(config.name)) export=\(Logger.quoted(config.exports.map(\.subject).joined(separator: ","))) import=\(Logger.quoted(config.imports.map(\.subject).joined(separator: ",")))")
    }

    public func stop() async {
        let (peer, nats, controller, loop) = running.withLock { r in defer { r = (nil, nil, nil, nil) }; return r }
        guard let peer, let nats, let controller, let loop else { return }
        await peer.close()
        await Self.stop(nats, controller, loop)
    }

    private static func stop(_ nats: NATSClient, _ controller: Controller, _ loop: EventLoop) async {
        await nats.close()
        controller.shutdown()
        await controller.stopped()
        loop.stopAndJoin()
    }

    // MARK: Export

    /// The origin and publisher header lines of the last publisher's exports: made once per
    /// publisher, not per message. Keyed by the whole identity, not the connection id alone: a
    /// restarted broker numbers its connections afresh.
    private let identity = Mutex<(sender: Sender?, lines: [UInt8])?>(nil)

    private func identityLines(_ view: EventView) -> [UInt8] {
        identity.withLock { cached in
            if let cached, cached.sender == view.sender { return cached.lines }
            var lines: [UInt8] = []
            try? NATSHeaders.appendLine(name: Header.origin, value: config.name, to: &lines)  // a checked name: one line
            if var publisher = view.sender.map(RemotePublisher.init) {
                // The name is the publisher's free text: a line break in it would start a
                // header line of its choosing, so it is sent as U+FFFD (BRIDGE.md, "Mapping").
                let scalars = publisher.name.unicodeScalars.map { $0 == "\r" || $0 == "\n" ? "\u{FFFD}" : $0 }
                publisher.name = String(String.UnicodeScalarView(scalars))
                try? NATSHeaders.appendLine(name: Header.publisher, value: publisher.headerValue, to: &lines)
            }
            cached = (view.sender, lines)
            return lines
        }
    }

    /// On the peer's loop, from the view: the subject and header block are made in a stack
    /// buffer (the identity lines come from `identity`), and the payload is copied only into
    /// NATS's outbox (or the outage buffer). A message with properties has them added as headers.
    private func export(_ view: EventView, prefix: [UInt8], peer: Peer, nats: NATSClient) {
        let plain = view.propertiesBytes.count == 1 && view.propertiesBytes[0] == 0
        let p = plain ? nil : view.properties  // a plain message (the common case) decodes nothing
        if view.publisher == peer.connectionID || p?.headers[Header.imported] != nil {
            counts.withLock { $0.loopsStopped += 1 }  // it came from NATS: it goes back nowhere
            return
        }
        let version: StaticString = "NATS/1.0\r\n"
        let lines = identityLines(view)
        let more: [UInt8]
        do { more = try p.map(Self.propertyLines) ?? [] } catch {
            counts.withLock { $0.dropped += 1 }
            log("event=export-dropped subject=\(Logger.quoted(config.mapping.prefix + "." + String(decoding: view.topicBytes, as: UTF8.self))) reason=\(Logger.quoted("\(error)"))")
            return
        }
        let size = prefix.count + view.topicBytes.count + version.utf8CodeUnitCount + lines.count + more.count + 2
        withUnsafeTemporaryAllocation(byteCount: size, alignment: 1) { buffer in
            var at = 0
            func put(_ bytes: UnsafeRawBufferPointer) {
                UnsafeMutableRawBufferPointer(rebasing: buffer[at..<(at + bytes.count)]).copyMemory(from: bytes)
                at += bytes.count
            }
            prefix.withUnsafeBytes { put($0) }
            put(view.topicBytes)
            let subjectEnd = at
            put(UnsafeRawBufferPointer(start: version.utf8Start, count: version.utf8CodeUnitCount))
            lines.withUnsafeBytes { put($0) }
            more.withUnsafeBytes { put($0) }
            buffer[at] = 13  // the empty line ending the block
            buffer[at + 1] = 10
            at += 2
            let frame = UnsafeRawBufferPointer(buffer)
            send(UnsafeRawBufferPointer(rebasing: frame[..<subjectEnd]), UnsafeRawBufferPointer(rebasing: frame[subjectEnd...]), view.payload, nats: nats)
        }
        if nats.isBackedUp { pauseExports(peer, nats) }
    }

    /// A message's properties as header lines (custom headers sorted by name); refuses a
    /// header that is not one line (a line break would let it add lines of its own).
    private static func propertyLines(_ p: MessageProperties) throws(NATSError) -> [UInt8] {
        var fields: [(String, String)] = []
        if let v = p.contentType { fields.append((Header.contentType, v)) }
        if let v = p.correlationID { fields.append((Header.correlationID, v)) }
        if let v = p.messageID { fields.append((Header.messageID, v)) }
        if let v = p.timestamp { fields.append((Header.timestamp, "\(v)")) }
        for (k, v) in p.headers.sorted(by: { $0.key < $1.key }) { fields.append((k, v)) }
        var out: [UInt8] = []
        for (name, value) in fields { try NATSHeaders.appendLine(name: name, value: value, to: &out) }
        return out
    }

    /// NATS reads slower than the local broker delivers: stop reading from the broker until it
    /// catches up (`.drained`), so the local publishers wait, under the broker's slow-consumer
    /// policy, instead of the bridge buffering without end or dropping. Checked under the lock
    /// the resume takes, so a `.drained` told meanwhile is never missed.
    private func pauseExports(_ peer: Peer, _ nats: NATSClient) {
        paused.withLock { paused in
            guard !paused, nats.isBackedUp else { return }
            paused = true
            peer.pauseDeliveries()
        }
    }

    private func resumeExports() {
        guard let peer = running.withLock({ $0.peer }) else { return }
        paused.withLock { paused in
            guard paused else { return }
            paused = false
            peer.resumeDeliveries()
        }
    }

    /// Publishes an export, or, while NATS is unreachable, keeps it for later or counts it
    /// dropped, as `outage` says. Held exports go first, so NATS sees every export in the order
    /// it was made. (While NATS is only backed up, reading from the broker is paused, so few
    /// exports arrive then; those that do are held like an outage's.)
    private func send(_ subject: UnsafeRawBufferPointer, _ headerBlock: UnsafeRawBufferPointer, _ payload: UnsafeRawBufferPointer, nats: NATSClient) {
        let outcome = pending.withLock { held -> SendOutcome in
            if !held.isEmpty { publishHeld(&held, nats) }
            var unreachable = !nats.isConnected
            if held.isEmpty && !nats.isBackedUp && !unreachable {
                switch Self.publish(subject, headerBlock, payload, nats) {
                case nil: return .sent
                case let error? where error.code == .notConnected: unreachable = true  // held below
                case let error?: return .refused(error)
                }
            }
            // Only backed up (reading from the broker pauses right after this one): kept
            // whatever the outage mode, since at most one export per pause arrives so.
            let keep = unreachable ? config.outage == .buffer && held.count < config.bufferMessages : true
            guard keep else { return .dropped }
            held.append(HeldExport(subject: Array(subject), headerBlock: Array(headerBlock), payload: Array(payload)))
            return .held
        }
        switch outcome {
        case .sent: counts.withLock { $0.exported += 1 }
        case .held: counts.withLock { $0.buffered += 1 }
        case .dropped: counts.withLock { $0.dropped += 1 }
        case .refused(let error):
            counts.withLock { $0.dropped += 1 }
            log("event=export-dropped subject=\(Logger.quoted(String(decoding: subject, as: UTF8.self))) reason=\(Logger.quoted("\(error)"))")
        }
    }

    private struct HeldExport: Sendable {
        var subject: [UInt8]
        var headerBlock: [UInt8]
        var payload: [UInt8]
    }
    private enum SendOutcome { case sent, held, dropped, refused(NATSError) }

    /// Why NATS did not take it, nil when it did.
    private static func publish(_ subject: UnsafeRawBufferPointer, _ headerBlock: UnsafeRawBufferPointer, _ payload: UnsafeRawBufferPointer, _ nats: NATSClient) -> NATSError? {
        do { try nats.publishWithoutWaiting(subject: subject, headerBlock: headerBlock, payload: payload) } catch { return error }
        return nil
    }

    /// Publishes held exports, in order, while NATS takes them. Under `pending`'s lock.
    private func publishHeld(_ held: inout [HeldExport], _ nats: NATSClient) {
        var done = 0, refused: UInt64 = 0
        while done < held.count, !nats.isBackedUp {
            let m = held[done]
            let error = m.subject.withUnsafeBytes { s in
                m.headerBlock.withUnsafeBytes { h in m.payload.withUnsafeBytes { Self.publish(s, h, $0, nats) } }
            }
            if let error {
                if error.code == .notConnected { break }
                refused += 1
                log("event=export-dropped subject=\(Logger.quoted(String(decoding: m.subject, as: UTF8.self))) reason=\(Logger.quoted("\(error)"))")
            }
            done += 1
        }
        held.removeFirst(done)
        if done > 0 { counts.withLock { $0.exported += UInt64(done) - refused; $0.dropped += refused } }
    }

    /// Connected again, or caught up: send what was held.
    private func flushPending() {
        guard let nats = running.withLock({ $0.nats }) else { return }
        pending.withLock { publishHeld(&$0, nats) }
    }

    // MARK: Services

    /// A NATS request for an exported service: asked of the local queue's responders; the reply
    /// (or why there is none) goes back to the NATS reply subject.
    private func serve(_ m: NATSMessage, queue: String, peer: Peer, nats: NATSClient) {
        guard let replyTo = m.replyTo else { return }
        var headers: [String: String] = [:]
        for (name, value) in m.headers?.fields ?? [] { headers[name] = value }
        let timeout = config.serviceTimeout
        Task(executorPreference: peer.executor) { [self] in  // on the loop: no thread hand-off
            var replyHeaders: NATSHeaders?
            let payload: [UInt8]
            do {
                payload = try await peer.request(to: .queue(queue), m.payload, headers: headers, timeout: timeout).payload
            } catch let error as EvbusError {
                let code = error.code == .remote ? (error.remoteCode ?? "error") : "\(error.code)"
                replyHeaders = NATSHeaders(fields: [(Header.error, code)])
                payload = Array(error.message.utf8)
            } catch {
                replyHeaders = NATSHeaders(fields: [(Header.error, "error")])
                payload = Array("\(error)".utf8)
            }
            do { try await nats.publish(replyTo, payload, headers: replyHeaders) } catch let error as NATSError where error.code == .payloadTooLarge {
                // The caller gets why, rather than waiting for its timeout.
                try? await nats.publish(replyTo, Array(error.message.utf8), headers: NATSHeaders(fields: [(Header.error, "\(error.code)")]))
                log("event=service-reply-lost queue=\(Logger.quoted(queue)) reason=\(Logger.quoted("\(error)"))")
            } catch {
                log("event=service-reply-lost queue=\(Logger.quoted(queue)) reason=\(Logger.quoted("\(error)"))")
            }
        }
    }

    /// A local request for an imported service: sent to NATS; NATS's answer is the reply. No
    /// responder on NATS (its 503) becomes the remote error `no-responder`.
    private func forward(_ request: Request, to subject: String, nats: NATSClient) async throws -> [UInt8] {
        let fields = request.headers.sorted { $0.key < $1.key }.map { (name: $0.key, value: $0.value) }
        do {
            let reply = try await nats.request(subject, request.payload, headers: fields.isEmpty ? nil : NATSHeaders(fields: fields), timeout: config.serviceTimeout)
            if let code = reply.headers?[Header.error] { throw RemoteError(code, String(decoding: reply.payload, as: UTF8.self)) }
            return reply.payload
        } catch let error as NATSError {
            switch error.code {
            case .noResponders: throw RemoteError("no-responder", "no responder on NATS subject \(subject)")
            case .timeout: throw RemoteError("timeout", "no reply from NATS subject \(subject) within \(config.serviceTimeout)")
            case .payloadTooLarge, .invalidArgument: throw RemoteError("\(error.code)", "NATS cannot carry this request: \(error.message)")
            default: throw RemoteError("nats-unavailable", error.message)
            }
        }
    }

    // MARK: Import

    /// A NATS message for the local broker: published at once, on the loop both connections
    /// share, in the order NATS delivered it. When the local broker reads slower than NATS
    /// delivers, the peer's outbox fills: reading from NATS pauses until it has room again.
    private func importMessage(_ m: NATSMessageView, _ encoding: ImportEncoding, name: [UInt8], prefix: [UInt8], peer: Peer, nats: NATSClient) {
        let fields = encoding.scan(m)
        let origin = fields.origin
        if let origin, name.withUnsafeBytes({ origin.count == $0.count && memcmp(origin.baseAddress!, $0.baseAddress!, $0.count) == 0 }) {
            counts.withLock { $0.loopsStopped += 1 }  // our own export, come back
            return
        }
        guard m.subject.count > prefix.count, prefix.withUnsafeBytes({ memcmp(m.subject.baseAddress!, $0.baseAddress!, $0.count) == 0 }) else { return }
        let topic = UnsafeRawBufferPointer(rebasing: m.subject[prefix.count...])
        let unnamed: StaticString = "nats"  // the origin of a message no bridge sent
        let full: Bool?
        do {
            full = try encoding.withProperties(m, fields, origin: origin ?? UnsafeRawBufferPointer(start: unnamed.utf8Start, count: unnamed.utf8CodeUnitCount)) {
                try peer.publishWithoutWaiting(topic: topic, payload: m.payload, wellFormedProperties: $0)
            }
        } catch {
            return importDropped(String(decoding: topic, as: UTF8.self), error)
        }
        guard let full else { return importMessage(m.message(), peer: peer, nats: nats) }  // decoded instead
        counts.withLock { $0.imported += 1 }
        if full { pauseImports(peer, nats) }
    }

    /// The decoding way in, for what `ImportEncoding` cannot carry byte for byte.
    private func importMessage(_ m: NATSMessage, peer: Peer, nats: NATSClient) {
        let origin = m.headers?[Header.origin]
        guard origin != config.name else {
            counts.withLock { $0.loopsStopped += 1 }  // our own export, come back
            return
        }
        guard let topic = config.mapping.topic(m.subject) else { return }
        var p = MessageProperties()
        var headers: [String: String] = [:]
        for (name, value) in m.headers?.fields ?? [] {
            switch name {
            case Header.contentType: p.contentType = value
            case Header.correlationID: p.correlationID = value
            case Header.messageID: p.messageID = value
            case Header.timestamp: p.timestamp = UInt64(value)
            default: headers[name] = value
            }
        }
        headers[Header.imported] = origin ?? "nats"
        p.headers = headers
        let full: Bool
        do {
            full = try m.payload.withUnsafeBytes { try peer.publishWithoutWaiting(topic, bytes: $0, properties: p) }
        } catch {
            return importDropped(topic, error)
        }
        counts.withLock { $0.imported += 1 }
        if full { pauseImports(peer, nats) }
    }

    /// A change in the bridge's connection to its broker as a logfmt event.
    static func logLine(_ event: ConnectionEvent) -> String {
        switch event {
        case .disconnected(let error): "event=broker-disconnected reason=\(Logger.quoted("\(error)"))"
        case .reconnecting(let attempt, let after): "event=broker-reconnecting attempt=\(attempt) after=\(Logger.quoted("\(after)"))"
        case .reconnected(let id): "event=broker-reconnected connection=\(id)"
        case .gaveUp(let error): "event=broker-gave-up reason=\(Logger.quoted("\(error)"))"
        }
    }

    /// An import the local broker did not take: too big for an evbus message's fields (refused
    /// whole rather than cut), or the peer closed under it.
    private func importDropped(_ topic: String, _ error: any Error) {
        counts.withLock { $0.dropped += 1 }
        log("event=import-dropped topic=\(Logger.quoted(topic)) reason=\(Logger.quoted("\(error)"))")
    }

    private func pauseImports(_ peer: Peer, _ nats: NATSClient) {
        guard !importsPaused.exchange(true, ordering: .relaxed) else { return }
        nats.pauseDeliveries()
        Task(executorPreference: peer.executor) { [self] in
            try? await peer.waitForRoom()  // or closed: reading from NATS goes on, publishes fail
            importsPaused.store(false, ordering: .relaxed)
            nats.resumeDeliveries()
        }
    }
}
