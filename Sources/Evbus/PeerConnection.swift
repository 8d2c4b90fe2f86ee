import EvbusIO
import EvbusWire
import Glibc

/// What the broker said in WELCOME.
struct Welcome: Sendable {
    var connectionID: UInt64
    var maxFrame: Int
    var brokerName: String
}

/// Where a subscription's events, or a consumer's deliveries, go.
enum Sink: Sendable {
    case queue(EventQueue)
    case handler(@Sendable (Event) -> Void)
    case view(@Sendable (EventView) -> Void)
    case deliveries(DeliveryBuffer<Delivery>)
    case deliveryHandler(@Sendable (Delivery) -> Void)
    case deliveryView(@Sendable (DeliveryView) -> Void)

    /// Ends an iterating sink (subscription or consumer); handlers have nothing to end.
    func finish(_ error: EvbusError?) {
        switch self {
        case .queue(let q): q.finish(error)
        case .deliveries(let d): d.finish(error)
        default: break
        }
    }

    /// The loop stops pushing here; true if an iterating sink held reading paused (see
    /// `DeliveryBuffer.release`).
    func release() -> Bool {
        switch self {
        case .queue(let q): q.release()
        case .deliveries(let d): d.release()
        default: false
        }
    }
}

/// The peer's side of the protocol on its event loop: handshake, control requests and their
/// replies, and turning DELIVER and MESSAGE frames into events. Loop-bound.
final class PeerConnection: ChannelDelegate {
    /// Where the connection is in its life. The reason it ended is `failure`.
    enum Phase {
        /// HELLO sent; WELCOME resumes `Peer.connect`.
        case handshaking(CheckedContinuation<(LoopBound<PeerConnection>, Welcome), any Error>)
        case open
        /// The connection dropped; a retry is scheduled (PeerReconnection.swift).
        case disconnected
        /// Connected again, HELLO sent, waiting for WELCOME.
        case rehandshaking
        /// Welcomed again; setting up what the peer had, one request at a time.
        case restoring
        /// `close()` was called: CLOSE sent, waiting for the broker to close its end.
        case closing
        case closed
    }

    /// The current socket; a new one after each reconnect.
    var channel: Channel
    let outbox: Outbox
    var phase = Phase.closed
    /// Why requests fail now: the connection ended (for good once `phase` is `.closed`), or it
    /// dropped and the peer is reconnecting.
    var failure: EvbusError?
    /// Requests and PINGs waiting for their answer.
    var pending = PendingReplies()
    /// Callers waiting on control requests, each with its deadline.
    let controlWaiters: ControlWaiters
    /// How long a (re)connection may take from HELLO to WELCOME, and the deadline of the
    /// current one (cancelled by WELCOME).
    let handshakeTimeout: Duration
    var handshakeTimer: TimerID?
    /// How to reconnect, where, as whom, and who hears about it.
    let reconnect: ReconnectPolicy
    let socketPath: String
    let name: String
    let events: ConnectionEvents
    /// The current connection's id, frame limit and inbox, as `Peer`'s callers read them.
    let facts: ConnectionFacts
    /// The current inbox as bytes (the reply-to of requests started on the loop).
    var inboxBytes: [UInt8] = []
    /// What to set up again after reconnecting.
    var topology = RestorableTopology()
    /// Consumers cancelled while restoring: their CONSUME may already be on the new connection,
    /// so their CANCEL goes out once restoring is done.
    var cancelAfterRestore: [UInt32] = []
    /// Delivery tags are the broker's plus this (which grows at each reconnect), so they stay
    /// unique for the peer's life and an ack of an old one can be recognised.
    var tagBase: UInt64 = 0
    /// The highest delivery tag handed out so far.
    var highestTag: UInt64 = 0
    /// Reconnecting: since when (monotonic ns), which try, the timer of the next.
    var disconnectedSince: UInt64 = 0
    var attempt = 0
    var retryTimer: TimerID?
    var sinks: [UInt32: Sink] = [:] {
        didSet { cachedSink = nil }
    }
    /// The last sink looked up: most connections deliver to one subscription over and over.
    /// Read for every delivery, one access at a time on the loop (the exclusivity check showed in
    /// the pub/sub profile).
    @exclusivity(unchecked) private var cachedSink: (id: UInt32, sink: Sink)?
    /// The last topic decoded, reused while the same topic repeats (saves validation and
    /// allocation); unchecked for the same reason as `cachedSink`.
    @exclusivity(unchecked) private var lastTopic: (bytes: [UInt8], text: String) = ([], "")
    /// Who each publisher is, as the broker announced (SENDER frames). Looked up for every
    /// delivery, one access at a time on the loop; unchecked for the same reason as `cachedSink`.
    @exclusivity(unchecked) var senders = SenderTable()
    /// Queues that asked the loop to stop reading; reading resumes when none is full.
    var fullQueues = 0
    var closeWaiters: [CheckedContinuation<Void, Never>] = []
    let onAsyncError: (@Sendable (EvbusError) -> Void)?
    let onReturn: (@Sendable (ReturnedMessage) -> Void)?
    /// Set by `Peer` right after the handshake (before any consumer exists); cleared on close,
    /// which breaks the cycle acker → core → this connection.
    var acker: Acker?
    /// Publisher confirms.
    var confirms = ConfirmTracker()
    /// Requests in flight (request/reply), by correlation id.
    let calls = RequestTable()

    init(
        channel: Channel, outbox: Outbox, socketPath: String, name: String, options: Peer.Options,
        events: ConnectionEvents, facts: ConnectionFacts
    ) {
        self.channel = channel
        self.outbox = outbox
        self.socketPath = socketPath
        self.name = name
        self.onAsyncError = options.onAsyncError
        self.onReturn = options.onReturn
        self.reconnect = options.reconnect
        self.events = events
        self.facts = facts
        self.controlWaiters = ControlWaiters(loop: channel.loop, timeout: options.controlTimeout)
        self.handshakeTimeout = options.handshakeTimeout
    }

    /// Sends the preamble and HELLO; `waiter` resumes on WELCOME.
    func start(waiter: CheckedContinuation<(LoopBound<PeerConnection>, Welcome), any Error>) {
        phase = .handshaking(waiter)
        sendHello()
    }

    /// HELLO on the current channel. A broker that accepted the connection (the kernel does
    /// that for a stopped or wedged one too) but sends no WELCOME within `handshakeTimeout`
    /// has the socket closed on it: `connect` fails, a reconnect counts it as a failed try.
    func sendHello() {
        channel.write(WireFormat.preamble)
        channel.write(Frame.hello(clientName: name, flags: HelloFlag.senders).encoded())
        let hello = channel
        let timeout = handshakeTimeout
        if let timer = handshakeTimer { channel.loop.cancelTimer(timer) }
        handshakeTimer = channel.loop.scheduleTimer(afterNanos: timeout.wholeNanoseconds) { [weak self] in
            guard let self, channel === hello, !hello.isClosed else { return }
            let silent = "the broker at \(socketPath) accepted the connection but sent no WELCOME within \(timeout)"
            switch phase {
            case .handshaking:
                fail(EvbusError(.cannotConnect, silent))
            case .rehandshaking:
                failure = EvbusError(.connectionLost, silent)  // what calls meanwhile are told
                hello.close(.local)
            case .open, .disconnected, .restoring, .closing, .closed:
                break
            }
        }
    }

    /// Between a drop and the end of restoring: publishes stay in the outbox.
    var isReconnecting: Bool {
        switch phase {
        case .disconnected, .rehandshaking, .restoring: true
        case .handshaking, .open, .closing, .closed: false
        }
    }

    // MARK: Output

    /// Moves published frames to the socket, unless the socket is over its high watermark (or
    /// the peer is reconnecting: they go once it is back).
    func drainOutbox() {
        guard channel.isWritable, !isReconnecting else {
            outbox.holdWhileSocketFull()
            return
        }
        channel.write(contentsOf: outbox.take())
    }

    /// Writes everything queued to the socket now rather than at the end of the loop's turn: a
    /// request's ACK must reach the broker before its handler starts (PROTOCOL.md §5.13), or a
    /// responder dying mid-handler would look as if it had never started the request.
    func writeNow() {
        drainOutbox()
        channel.flush()
    }

    /// Control frames go after everything published before them, so order is what the caller
    /// wrote (while restoring, publishes wait until everything is set up again).
    func send(_ frame: Frame) {
        if !isReconnecting { channel.write(contentsOf: outbox.take()) }
        channel.write(frame.encoded())
    }

    /// A control request from a caller; a declaration the broker accepts is remembered, to be
    /// made again after a reconnect (also when the caller gave up waiting before the answer).
    func request(_ frame: Frame, id: UInt32, _ waiter: ControlWaiter<Frame>) {
        if let failure { return waiter.resume(throwing: failure) }
        pending.expect(id) { [self] result in
            if case .success(let reply) = result { topology.succeeded(frame, reply: reply) }
            waiter.resume(with: result)
        }
        send(frame)
    }

    /// Sends `frame`; `body` runs on the loop with the broker's answer to request `id`.
    func request(_ frame: Frame, id: UInt32, onLoop body: @escaping PendingReplies.Handler) {
        pending.expect(id, body)
        send(frame)
    }

    /// SUBSCRIBE for each pattern: all or nothing. A caller that gives up first never gets the
    /// subscription, so its events stop at once and what the broker sets up later is undone.
    func subscribe(_ ids: [UInt32], patterns: [String], policy: UInt8, sink: Sink, _ waiter: ControlWaiter<Void>) {
        if let failure { return waiter.resume(throwing: failure) }
        for id in ids { sinks[id] = sink }
        waiter.onGiveUp = { [self] in for id in ids { removeSink(id) } }
        var remaining = ids.count
        var subscribed: [UInt32] = []
        var firstError: (any Error)?
        for (id, pattern) in zip(ids, patterns) {
            request(.subscribe(subscriptionID: id, pattern: pattern, policy: policy), id: id) { [self] result in
                switch result {
                case .success: subscribed.append(id)
                case .failure(let e):
                    removeSink(id)
                    firstError = firstError ?? e
                }
                remaining -= 1
                guard remaining == 0 else { return }
                if firstError != nil || waiter.gaveUp {
                    for other in subscribed {
                        removeSink(other)
                        send(.unsubscribe(subscriptionID: other))
                    }
                    if let firstError { waiter.resume(throwing: firstError) }
                } else {
                    for (id, pattern) in zip(ids, patterns) { topology.subscribed(id, pattern: pattern, policy: policy) }
                    waiter.resume()
                }
            }
        }
    }

    /// Stops deliveries for `ids` at once and tells the broker.
    func unsubscribe(_ ids: [UInt32], _ waiter: ControlWaiter<Void>) {
        let removed = ids.compactMap { removeSink($0) }
        for sink in removed { sink.finish(nil) }  // finishing twice (two patterns, one queue) is harmless
        for id in ids { topology.forget(id) }
        if let failure { return waiter.resume(throwing: failure) }
        var remaining = ids.count
        for id in ids {
            // OK or unknown-subscription: either way the subscription is gone, which is the goal.
            request(.unsubscribe(subscriptionID: id), id: id) { _ in
                remaining -= 1
                if remaining == 0 { waiter.resume() }
            }
        }
    }

    /// PING; resumes when the PONG comes back, so the broker has handled everything sent before.
    func ping(_ waiter: ControlWaiter<Void>) {
        if let failure { return waiter.resume(throwing: failure) }
        send(.ping(token: pending.expectPong(waiter)))
    }

    // MARK: Input

    func channelReceived(_ channel: Channel, _ bytes: UnsafeRawBufferPointer) -> Int {
        var offset = 0
        while offset < bytes.count && !channel.isClosed {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[offset...])
            do {
                switch try FrameSplitter.next(rest, maxFrame: WireFormat.maxMaxFrame + 64) {
                case .needMore:
                    return offset
                case .frame(let frame, let consumed):
                    offset += consumed
                    try handle(frame)
                }
            } catch {
                fail(EvbusError(.protocolViolation, "bad frame from the broker: \(error)"))
                return bytes.count
            }
            if fullQueues > 0 { return offset }
        }
        return offset
    }

    private func handle(_ frame: RawFrame) throws(WireError) {
        switch frame.type {
        case .deliver: try handleDeliver(DeliverView(body: frame.body))
        case .message: try handleMessage(MessageView(body: frame.body))
        default: try handleControl(Frame.decode(type: frame.type, body: frame.body), type: frame.type)
        }
    }

    /// A subscription's event, or a reply to this peer's inbox.
    @inline(__always)
    private func handleDeliver(_ d: DeliverView) throws(WireError) {
        if d.subscriptionID == Inbox.subscriptionID {
            // A reply to this peer's inbox: decoded only if a call is waiting for it.
            guard let idBytes = MessageProperties.routingFields(block: d.properties).correlationID,
                let id = calls.waiting(CorrelationNumber.parse(idBytes))
            else { return }
            calls.reply(id, Reply(payload: Array(d.payload), properties: d.decodedProperties(), publisher: d.publisher), loop: channel.loop)
            return
        }
        guard let sink = sink(for: d.subscriptionID) else { return }  // unsubscribed while in flight
        switch sink {
        case .view(let h):
            h(EventView(
                topicBytes: d.topic, payload: d.payload, publisher: d.publisher, subscriptionID: d.subscriptionID,
                propertiesBytes: d.properties, sender: senders.sender(of: d.publisher)))
        case .handler(let h):
            h(event(d))
        case .queue(let q):
            if q.push(event(d)) { pauseForFullQueue() }
        case .deliveries, .deliveryHandler, .deliveryView:
            throw WireError(.unexpectedFrame, "DELIVER for consumer \(d.subscriptionID), which is not a subscription")
        }
    }

    /// A consumer's delivery.
    @inline(__always)
    private func handleMessage(_ m: MessageView) throws(WireError) {
        guard let sink = sink(for: m.consumerID) else { return }  // cancelled while in flight (the broker requeues it)
        let tag = m.deliveryTag == 0 ? 0 : m.deliveryTag &+ tagBase
        if tag > highestTag { highestTag = tag }
        switch sink {
        case .deliveryView(let h):
            h(DeliveryView(
                exchangeBytes: m.exchange, routingKeyBytes: m.routingKey, payload: m.payload, propertiesBytes: m.properties,
                deliveryTag: tag, redelivered: m.flags & AckFlag.redelivered != 0, publisher: m.publisher,
                consumerID: m.consumerID, sender: senders.sender(of: m.publisher)))
        case .deliveryHandler(let h):
            h(delivery(m, tag: tag))
        case .deliveries(let buffer):
            if buffer.push(delivery(m, tag: tag)) { pauseForFullQueue() }
        case .queue, .handler, .view:
            throw WireError(.unexpectedFrame, "MESSAGE for subscription \(m.consumerID), which is not a consumer")
        }
    }

    private func pauseForFullQueue() { pauseReading() }

    /// One more reason not to read (a full subscription buffer, or `Peer.pauseDeliveries`);
    /// `queueHasRoom` ends one.
    func pauseReading() {
        fullQueues += 1
        channel.pauseReading()
    }

    /// Everything else the broker sends: answers, confirms, returns, and its side of the lifecycle.
    private func handleControl(_ decoded: Frame, type: FrameType) throws(WireError) {
        switch decoded {
        case .queueOK(let id, _), .topologyReply(let id, _, _), .connectionsReply(let id, _):
            resolve(id, .success(decoded))
        case .ok(let id):
            resolve(id, .success(.ok(requestID: id)))
        case .statsReply(let id, let entries):
            resolve(id, .success(.statsReply(requestID: id, entries: entries)))
        case .confirm(let sequence, let flags):
            for (waiter, outcome) in confirms.confirmed(sequence, flags: flags) { resume(waiter, with: outcome.mapError { $0 }) }
        case .returned(let code, let exchange, let key, let properties, let payload):
            let callID = properties.correlationID.flatMap(CorrelationNumber.parse)
            if code == .responderGone, let id = callID {
                calls.responderGone(id, loop: channel.loop)
            } else if let id = callID, let reason = properties.headers[RefusedRequest.reasonHeader],
                calls.refused(id, EvbusError(refused: WireError(code, reason)), loop: channel.loop)
            {
                // A refused request: its call failed with the broker's reason.
            } else {
                onReturn?(ReturnedMessage(code: code, exchange: exchange, routingKey: key, properties: properties, payload: payload))
            }
        case .routed(let reached, let id):
            if let id = CorrelationNumber.parse(id) { calls.routed(id, reached: Int(reached), loop: channel.loop) }
        case .cancel(let id):
            topology.forget(id)
            removeSink(id)?.finish(EvbusError(.consumerCancelled, "the broker cancelled consumer \(id): its queue was deleted"))
        case .welcome(_, let maxFrame, let connectionID, let brokerName):
            if let timer = handshakeTimer { channel.loop.cancelTimer(timer) }
            handshakeTimer = nil
            if case .rehandshaking = phase { return welcomedAgain(connectionID: connectionID, maxFrame: Int(maxFrame)) }
            guard case .handshaking(let waiter) = phase else {
                throw WireError(.unexpectedFrame, "WELCOME after the handshake")
            }
            phase = .open
            adopt(connectionID: connectionID, maxFrame: Int(maxFrame))
            waiter.resume(returning: (LoopBound(self, loop: channel.loop), Welcome(
                connectionID: connectionID, maxFrame: Int(maxFrame), brokerName: brokerName)))
        case .error(let code, let id, let message):
            let error = EvbusError(refused: WireError(code, message))
            if code.closesConnection {
                fail(error)
            } else if id != 0 && pending.isWaiting(for: id) {
                resolve(id, .failure(error))
            } else if id != 0, code == .accessRefused, let sink = removeSink(id) {
                // A reload of the access rules took this subscription or consumer back; the
                // CANCEL that follows finds it gone already.
                topology.forget(id)
                sink.finish(error)
            } else {
                onAsyncError?(error)
            }
        case .pong(let token):
            pending.takePong(token)?.resume()
        case .ping(let token):
            send(.pong(token: token))
        case .close(let code, let reason):
            let text = code == ErrorCode.shuttingDown.rawValue ? "the broker is shutting down" : "the broker closed the connection"
            fail(EvbusError(.connectionLost, "\(text): \(reason)"))
        case .sender(let publisher, let uid, let gid, let pid, let name, let flags):
            senders.learn(
                Sender(connectionID: publisher, uid: uid, gid: gid, pid: pid, name: name),
                forgetEarlier: flags & SenderFlag.forgetEarlier != 0)
        case .hello, .publish, .subscribe, .unsubscribe, .deliver, .stats, .topology, .connections, .declareExchange, .deleteExchange,
            .declareQueue, .deleteQueue, .purgeQueue, .bind, .unbind, .publishTo, .consume, .message, .ack, .nack:
            throw WireError(.unexpectedFrame, "\(type.name) is not sent by brokers")
        }
    }

    @inline(__always)
    private func event(_ d: DeliverView) -> Event {
        Event(
            topic: topicString(d.topic), payload: Array(d.payload), publisher: d.publisher,
            subscriptionID: d.subscriptionID, properties: d.decodedProperties(), sender: senders.sender(of: d.publisher))
    }

    @inline(__always)
    private func delivery(_ m: MessageView, tag: UInt64) -> Delivery {
        Delivery(
            exchange: String(decoding: m.exchange, as: UTF8.self), routingKey: topicString(m.routingKey),
            payload: Array(m.payload), properties: m.decodedProperties(), deliveryTag: tag,
            redelivered: m.flags & AckFlag.redelivered != 0, publisher: m.publisher, consumerID: m.consumerID,
            acker: tag == 0 ? nil : acker, sender: senders.sender(of: m.publisher))
    }

    @inline(__always)
    private func sink(for id: UInt32) -> Sink? {
        if let cachedSink, cachedSink.id == id { return cachedSink.sink }
        guard let sink = sinks[id] else { return nil }
        cachedSink = (id, sink)
        return sink
    }

    @inline(__always)
    private func topicString(_ bytes: UnsafeRawBufferPointer) -> String {
        let same = lastTopic.bytes.count == bytes.count
            && lastTopic.bytes.withUnsafeBytes { bytes.isEmpty || memcmp($0.baseAddress!, bytes.baseAddress!, bytes.count) == 0 }
        if !same { lastTopic = (Array(bytes), String(decoding: bytes, as: UTF8.self)) }
        return lastTopic.text
    }

    private func resolve(_ id: UInt32, _ result: Result<Frame, any Error>) {
        pending.take(id)?(result)
    }

    /// Takes subscription or consumer `id`'s sink out: nothing more is delivered to it, and a
    /// full buffer of it no longer holds reading paused.
    @discardableResult
    func removeSink(_ id: UInt32) -> Sink? {
        guard let sink = sinks.removeValue(forKey: id) else { return nil }
        if sink.release() { queueHasRoom() }
        return sink
    }

    /// Called (via the loop) when a full queue has room again, or a pause ends.
    func queueHasRoom() {
        fullQueues -= 1
        if fullQueues == 0 { channel.resumeReading() }
    }

}
