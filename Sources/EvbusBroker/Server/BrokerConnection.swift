import EvbusIO
import EvbusWire

/// One client connection in the broker: its handshake state, subscriptions and backpressure links.
/// Turns bytes into frames (Wire) and hands them to the server (routing). Loop-bound.
final class BrokerConnection: ChannelDelegate {
    enum Phase { case preamble, hello, open, closing }

    let id: UInt64
    let slot: UInt32
    let channel: Channel
    let credentials: PeerCredentials?
    /// The server owns every connection and outlives it, so an unchecked reference is safe and
    /// avoids an unowned-retain on each access (it is read for every frame).
    unowned(unsafe) let server: BrokerServer
    @exclusivity(unchecked) var phase = Phase.preamble
    var name = ""
    var subscriptions: Set<UInt32> = []
    /// This connection's queue consumers, by their client-chosen id.
    var consumers: [UInt32: ConsumerRecord] = [:]
    /// Deliveries awaiting ACK/NACK, by delivery tag.
    @exclusivity(unchecked) var ledger = UnackedLedger()
    /// Requests this connection accepted (acknowledged) and has not answered yet: (caller's
    /// connection id, correlation id). If it goes, each caller is told `responder-gone`.
    @exclusivity(unchecked) var openRequests: [(caller: UInt64, correlationID: String)] = []
    /// The connection's write queue passed its high watermark: its consumers get nothing until it drains.
    @exclusivity(unchecked) var consumersBlocked = false
    /// Confirmed publishes are numbered 1, 2, 3... per connection (PROTOCOL.md §6.4).
    @exclusivity(unchecked) var confirmSequence: UInt64 = 0
    /// The highest sequence routed but not yet confirmed: confirmed with one CONFIRM(multiple)
    /// after each batch of frames read, not one frame per publish.
    @exclusivity(unchecked) var confirmPending: UInt64 = 0

    /// How many slow receivers this connection is waiting for (backpressure); reading resumes at 0.
    @exclusivity(unchecked) var blockedBy = 0
    /// Publishers paused because this connection is slow: (slot, id) so a reused slot is not confused.
    var blockedPublishers: [(slot: UInt32, id: UInt64)] = []

    init(id: UInt64, slot: UInt32, channel: Channel, credentials: PeerCredentials?, server: BrokerServer) {
        self.id = id
        self.slot = slot
        self.channel = channel
        self.credentials = credentials
        self.server = server
    }

    /// Who this is, for log lines.
    var label: String {
        let who = name.isEmpty ? "" : " '\(name)'"
        return "connection \(id)\(who)" + (credentials.map { " (\($0))" } ?? "")
    }

    // MARK: Bytes to frames

    func channelReceived(_ channel: Channel, _ bytes: UnsafeRawBufferPointer) -> Int {
        var offset = 0
        do {
            while offset < bytes.count && phase != .closing && blockedBy == 0 {
                let rest = UnsafeRawBufferPointer(rebasing: bytes[offset...])
                if phase == .preamble {
                    guard try Preamble.check(rest) != nil else { return offset }
                    offset += WireFormat.preambleSize
                    phase = .hello
                    continue
                }
                let limit = phase == .open ? server.config.maxFrameBytes : WireFormat.maxHandshakeFrame
                switch try FrameSplitter.next(rest, maxFrame: limit) {
                case .needMore:
                    return offset
                case .frame(let frame, let consumed):
                    offset += consumed
                    try handle(frame)
                }
            }
        } catch {
            fail(error)
            server.flushPendingDispatch()
            return bytes.count
        }
        flushConfirms()
        server.flushPendingDispatch()
        return offset
    }

    /// Sends one CONFIRM(multiple) for every publish confirmed since the last one.
    func flushConfirms() {
        guard confirmPending != 0 else { return }
        send(.confirm(sequence: confirmPending, flags: AckFlag.multiple))
        confirmPending = 0
    }

    /// Stops deliveries to this connection's consumers until its write queue drains.
    func blockConsumers() {
        guard !consumersBlocked else { return }
        consumersBlocked = true
        for consumer in consumers.values { consumer.blocked = true }
    }

    private func handle(_ frame: RawFrame) throws(WireError) {
        if phase == .hello {
            guard frame.type == .hello else {
                throw WireError(.unexpectedFrame, "expected HELLO after the preamble, got \(frame.type.name)")
            }
            guard case .hello(let clientName) = try Frame.decode(type: .hello, body: frame.body) else { return }
            name = clientName
            phase = .open
            send(.welcome(
                version: WireFormat.version, maxFrame: UInt32(server.config.maxFrameBytes),
                connectionID: id, brokerName: server.config.brokerName))
            server.log.debug("\(label) connected")
            return
        }
        switch frame.type {
        case .publish:
            try server.publish(from: self, body: frame.body)
        case .publishTo:
            try server.publishTo(from: self, body: frame.body)
        case .ack, .nack:
            guard frame.body.count == 9 else {
                throw WireError(.malformedFrame, "\(frame.type.name) body is \(frame.body.count) bytes; it must be 9")
            }
            let tag = UInt64(littleEndian: frame.body.loadUnaligned(as: UInt64.self))
            let flags = frame.body[8]
            guard flags & (frame.type == .ack ? 0xFE : 0xFC) == 0 else {
                throw WireError(.malformedFrame, "reserved \(frame.type.name) flag bits set (0x\(String(flags, radix: 16)))")
            }
            if frame.type == .ack {
                server.ack(from: self, tag: tag, flags: flags)
            } else {
                server.nack(from: self, tag: tag, flags: flags)
            }
        case .hello:
            throw WireError(.unexpectedFrame, "HELLO was already sent on this connection")
        case .welcome, .error, .ok, .deliver, .statsReply, .topologyReply, .queueOK, .message, .confirm, .returned, .routed:
            throw WireError(.unexpectedFrame, "\(frame.type.name) frames are sent by the broker, not by clients")
        default:
            try handleControl(try Frame.decode(type: frame.type, body: frame.body))
        }
    }

    private func handleControl(_ frame: Frame) throws(WireError) {
        switch frame {
        case .subscribe(let id, let pattern):
            do {
                try server.subscribe(self, id: id, pattern: pattern)
                send(.ok(requestID: id))
            } catch {
                refuse(error, requestID: id)
            }
        case .unsubscribe(let id):
            do {
                try server.unsubscribe(self, id: id)
                send(.ok(requestID: id))
            } catch {
                refuse(error, requestID: id)
            }
        case .ping(let token):
            send(.pong(token: token))
        case .pong:
            break
        case .stats(let requestID):
            send(.statsReply(requestID: requestID, entries: server.statEntries()))
        case .close:
            phase = .closing
            channel.closeAfterFlush()
        default:
            server.handleRouting(frame, from: self)
        }
    }

    // MARK: Output

    func send(_ frame: Frame) {
        channel.write(frame.encoded())
    }

    /// Refuses one request; the connection stays open.
    func refuse(_ error: WireError, requestID: UInt32) {
        server.stats.rejectedRequests += 1
        server.log.info("\(label): refused request \(requestID): \(error)")
        send(.error(code: error.code, requestID: requestID, message: error.message))
    }

    /// A protocol violation: tell the client why, log one line, close only this connection.
    func fail(_ error: WireError) {
        guard phase != .closing else { return }
        server.stats.protocolErrors += 1
        server.log.warning("\(label): closing: \(error)")
        send(.error(code: error.code, requestID: 0, message: error.message))
        phase = .closing
        channel.closeAfterFlush()
    }

    // MARK: Channel events

    func channelBecameWritable(_ channel: Channel) {
        server.releasePublishers(blockedOn: self)
        server.unblockConsumers(of: self)
    }

    func channelClosed(_ channel: Channel, _ reason: Channel.CloseReason) {
        phase = .closing
        server.connectionClosed(self, reason: reason)
    }
}
