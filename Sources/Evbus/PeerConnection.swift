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
}

/// The peer's side of the protocol on its event loop: handshake, control requests and their
/// replies, and turning DELIVER frames into events. Loop-bound.
final class PeerConnection: ChannelDelegate {
    let channel: Channel
    let outbox: Outbox
    private var welcomeWaiter: CheckedContinuation<(LoopBound<PeerConnection>, Welcome), any Error>?
    private var welcomed = false
    private var requests: [UInt32: CheckedContinuation<Frame, any Error>] = [:]
    private var pings: [UInt64: CheckedContinuation<Void, any Error>] = [:]
    private var nextPing: UInt64 = 1
    var sinks: [UInt32: Sink] = [:] {
        didSet { cachedSink = nil }
    }
    /// The last sink looked up: most connections deliver to one subscription over and over.
    @exclusivity(unchecked) private var cachedSink: (id: UInt32, sink: Sink)?
    /// The last topic decoded, reused while the same topic repeats (saves validation and allocation).
    @exclusivity(unchecked) private var lastTopic: (bytes: [UInt8], text: String) = ([], "")
    /// Queues that asked the loop to stop reading; reading resumes when none is full.
    private var fullQueues = 0
    private var closeWaiters: [CheckedContinuation<Void, Never>] = []
    private(set) var failure: EvbusError?
    private var isClosing = false
    let onAsyncError: (@Sendable (EvbusError) -> Void)?
    let onReturn: (@Sendable (ReturnedMessage) -> Void)?
    /// Set by `Peer` right after the handshake (before any consumer exists); cleared on close,
    /// which breaks the cycle acker → core → this connection.
    var acker: Acker?
    /// Publisher confirms: every sequence up to this one has been answered; these were nacked.
    var confirmedThrough: UInt64 = 0
    var nacked: [UInt64] = []
    var confirmWaiters: [(through: UInt64, waiter: CheckedContinuation<Void, any Error>)] = []
    /// Requests in flight (request/reply), by correlation id.
    let calls = RequestTable()

    init(
        channel: Channel, outbox: Outbox, onAsyncError: (@Sendable (EvbusError) -> Void)?,
        onReturn: (@Sendable (ReturnedMessage) -> Void)?
    ) {
        self.channel = channel
        self.outbox = outbox
        self.onAsyncError = onAsyncError
        self.onReturn = onReturn
    }

    /// Sends the preamble and HELLO; `waiter` resumes on WELCOME.
    func start(name: String, waiter: CheckedContinuation<(LoopBound<PeerConnection>, Welcome), any Error>) {
        welcomeWaiter = waiter
        channel.write(WireFormat.preamble)
        channel.write(Frame.hello(clientName: name).encoded())
    }

    // MARK: Output

    /// Moves published frames to the socket, unless the socket is over its high watermark.
    func drainOutbox() {
        guard channel.isWritable else {
            outbox.holdWhileSocketFull()
            return
        }
        channel.write(contentsOf: outbox.take())
    }

    /// Control frames go after everything published before them, so order is what the caller wrote.
    func send(_ frame: Frame) {
        channel.write(contentsOf: outbox.take())
        channel.write(frame.encoded())
    }

    func request(_ frame: Frame, id: UInt32, _ waiter: CheckedContinuation<Frame, any Error>) {
        if let failure { return waiter.resume(throwing: failure) }
        requests[id] = waiter
        send(frame)
    }

    func subscribe(_ ids: [UInt32], patterns: [String], sink: Sink, _ waiter: CheckedContinuation<Void, any Error>) {
        if let failure { return waiter.resume(throwing: failure) }
        for id in ids { sinks[id] = sink }
        var remaining = ids.count
        var firstError: (any Error)?
        for (id, pattern) in zip(ids, patterns) {
            let reply = LocalReply { [self] result in
                if case .failure(let e) = result {
                    sinks[id] = nil
                    firstError = firstError ?? e
                }
                remaining -= 1
                if remaining == 0 {
                    if let firstError {
                        // All or nothing: undo the patterns that did succeed.
                        for other in ids where sinks[other] != nil {
                            sinks[other] = nil
                            send(.unsubscribe(subscriptionID: other))
                        }
                        waiter.resume(throwing: firstError)
                    } else {
                        waiter.resume()
                    }
                }
            }
            localReplies[id] = reply
            send(.subscribe(subscriptionID: id, pattern: pattern))
        }
    }

    /// Replies handled on the loop itself (multi-pattern subscribe), by request id.
    var localReplies: [UInt32: LocalReply] = [:]

    final class LocalReply {
        let body: (Result<Frame, any Error>) -> Void
        init(_ body: @escaping (Result<Frame, any Error>) -> Void) { self.body = body }
    }

    /// Stops deliveries for `ids` at once and tells the broker.
    func unsubscribe(_ ids: [UInt32], _ waiter: CheckedContinuation<Void, any Error>) {
        let removed = ids.compactMap { sinks.removeValue(forKey: $0) }
        for sink in removed { sink.finish(nil) }  // finishing twice (two patterns, one queue) is harmless
        if let failure { return waiter.resume(throwing: failure) }
        var remaining = ids.count
        for id in ids {
            // OK or unknown-subscription: either way the subscription is gone, which is the goal.
            localReplies[id] = LocalReply { _ in
                remaining -= 1
                if remaining == 0 { waiter.resume() }
            }
            send(.unsubscribe(subscriptionID: id))
        }
    }

    /// PING; resumes when the PONG comes back, so the broker has handled everything sent before.
    func ping(_ waiter: CheckedContinuation<Void, any Error>) {
        if let failure { return waiter.resume(throwing: failure) }
        let token = nextPing
        nextPing += 1
        pings[token] = waiter
        send(.ping(token: token))
    }

    /// Graceful close: send what is queued and CLOSE, then wait for the broker to close its end
    /// (which it does after handling everything before CLOSE).
    func close(_ waiter: CheckedContinuation<Void, Never>) {
        if channel.isClosed {
            return waiter.resume()
        }
        closeWaiters.append(waiter)
        guard !isClosing else { return }
        isClosing = true
        send(.close(code: 0, reason: "client closing"))
        outbox.close(EvbusError(.closed, "the peer was closed"))
        channel.loop.scheduleTimer(afterNanos: 2_000_000_000) { [weak self] in self?.channel.close(.local) }
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
        if frame.type == .deliver {
            let d = try DeliverView(body: frame.body)
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
                    propertiesBytes: d.properties))
            case .handler(let h):
                h(event(d))
            case .queue(let q):
                let event = event(d)
                if q.push(event) {
                    fullQueues += 1
                    channel.pauseReading()
                }
            default:
                throw WireError(.unexpectedFrame, "DELIVER for consumer \(d.subscriptionID), which is not a subscription")
            }
            return
        }
        if frame.type == .message {
            let m = try MessageView(body: frame.body)
            guard let sink = sink(for: m.consumerID) else { return }  // cancelled while in flight (the broker requeues it)
            switch sink {
            case .deliveryView(let h):
                h(DeliveryView(
                    exchangeBytes: m.exchange, routingKeyBytes: m.routingKey, payload: m.payload, propertiesBytes: m.properties,
                    deliveryTag: m.deliveryTag, redelivered: m.flags & AckFlag.redelivered != 0, publisher: m.publisher,
                    consumerID: m.consumerID))
            case .deliveryHandler(let h):
                h(delivery(m))
            case .deliveries(let buffer):
                if buffer.push(delivery(m)) {
                    fullQueues += 1
                    channel.pauseReading()
                }
            default:
                throw WireError(.unexpectedFrame, "MESSAGE for subscription \(m.consumerID), which is not a consumer")
            }
            return
        }
        let decoded = try Frame.decode(type: frame.type, body: frame.body)
        switch decoded {
        case .queueOK(let id, _), .topologyReply(let id, _, _):
            resolve(id, .success(decoded))
        case .confirm(let sequence, let flags):
            confirmed(sequence, flags: flags)
        case .returned(let code, let exchange, let key, let properties, let payload):
            if code == .responderGone, let id = properties.correlationID.flatMap(CorrelationNumber.parse) {
                calls.responderGone(id, loop: channel.loop)
            } else {
                onReturn?(ReturnedMessage(code: code, exchange: exchange, routingKey: key, properties: properties, payload: payload))
            }
        case .routed(let reached, let id):
            if let id = CorrelationNumber.parse(id) { calls.routed(id, reached: Int(reached), loop: channel.loop) }
        case .cancel(let id):
            sinks.removeValue(forKey: id)?.finish(EvbusError(.consumerCancelled, "the broker cancelled consumer \(id): its queue was deleted"))
        case .welcome(_, let maxFrame, let connectionID, let brokerName):
            welcomed = true
            let info = Welcome(connectionID: connectionID, maxFrame: Int(maxFrame), brokerName: brokerName)
            welcomeWaiter?.resume(returning: (LoopBound(self, loop: channel.loop), info))
            welcomeWaiter = nil
        case .ok(let id):
            resolve(id, .success(.ok(requestID: id)))
        case .statsReply(let id, let entries):
            resolve(id, .success(.statsReply(requestID: id, entries: entries)))
        case .error(let code, let id, let message):
            let error = EvbusError(refused: WireError(code, message))
            if code.closesConnection {
                fail(error)
            } else if id != 0 && (requests[id] != nil || localReplies[id] != nil) {
                resolve(id, .failure(error))
            } else {
                onAsyncError?(error)
            }
        case .pong(let token):
            pings.removeValue(forKey: token)?.resume()
        case .ping(let token):
            send(.pong(token: token))
        case .close(let code, let reason):
            let text = code == ErrorCode.shuttingDown.rawValue ? "the broker is shutting down" : "the broker closed the connection"
            fail(EvbusError(.connectionLost, "\(text): \(reason)"))
        default:
            throw WireError(.unexpectedFrame, "\(frame.type.name) is not sent by brokers")
        }
    }

    @inline(__always)
    private func event(_ d: DeliverView) -> Event {
        Event(
            topic: topicString(d.topic), payload: Array(d.payload), publisher: d.publisher,
            subscriptionID: d.subscriptionID, properties: d.decodedProperties())
    }

    @inline(__always)
    private func delivery(_ m: MessageView) -> Delivery {
        Delivery(
            exchange: String(decoding: m.exchange, as: UTF8.self), routingKey: topicString(m.routingKey),
            payload: Array(m.payload), properties: m.decodedProperties(), deliveryTag: m.deliveryTag,
            redelivered: m.flags & AckFlag.redelivered != 0, publisher: m.publisher, consumerID: m.consumerID,
            acker: m.deliveryTag == 0 ? nil : acker)
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
        if let reply = localReplies.removeValue(forKey: id) {
            reply.body(result)
        } else if let waiter = requests.removeValue(forKey: id) {
            waiter.resume(with: result)
        }
    }

    /// Called (via the loop) when a full queue has room again.
    func queueHasRoom() {
        fullQueues -= 1
        if fullQueues == 0 { channel.resumeReading() }
    }

    // MARK: Failure and close

    /// The connection is unusable: remember why and close the socket.
    private func fail(_ error: EvbusError) {
        if failure == nil { failure = error }
        channel.close(.local)
    }

    func channelBecameWritable(_ channel: Channel) {
        drainOutbox()
    }

    func channelClosed(_ channel: Channel, _ reason: Channel.CloseReason) {
        let error: EvbusError
        if let failure {
            error = failure
        } else if isClosing {
            error = EvbusError(.closed, "the peer was closed")
        } else {
            error = EvbusError(.connectionLost, "the connection to the broker ended: \(reason)")
        }
        failure = error
        outbox.close(error)
        if !welcomed {
            welcomeWaiter?.resume(throwing: error)
            welcomeWaiter = nil
        }
        for (_, w) in requests { w.resume(throwing: error) }
        requests.removeAll()
        let replies = localReplies
        localReplies.removeAll()
        for (_, r) in replies { r.body(.failure(error)) }
        for (_, w) in pings { w.resume(throwing: error) }
        pings.removeAll()
        // A deliberate close ends iteration normally; a lost connection makes it throw.
        let endError: EvbusError? = isClosing && error.code == .closed ? nil : error
        for (_, sink) in sinks { sink.finish(endError) }
        sinks.removeAll()
        let confirmWaiting = confirmWaiters
        confirmWaiters.removeAll()
        for (_, w) in confirmWaiting { w.resume(throwing: error) }
        calls.failAll(error, loop: channel.loop)
        acker = nil
        for w in closeWaiters { w.resume() }
        closeWaiters.removeAll()
    }
}
