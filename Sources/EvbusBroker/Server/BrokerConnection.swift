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
    var phase = Phase.preamble
    var name = ""
    var subscriptions: Set<UInt32> = []

    /// How many slow receivers this connection is waiting for (backpressure); reading resumes at 0.
    var blockedBy = 0
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
            return bytes.count
        }
        return offset
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
        case .hello:
            throw WireError(.unexpectedFrame, "HELLO was already sent on this connection")
        case .welcome, .error, .ok, .deliver, .statsReply:
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
            break
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
    }

    func channelClosed(_ channel: Channel, _ reason: Channel.CloseReason) {
        phase = .closing
        server.connectionClosed(self, reason: reason)
    }
}
