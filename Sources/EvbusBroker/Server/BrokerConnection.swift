import EvbusIO
import EvbusWire

/// One client connection's glue: its channel, its handshake (preamble, HELLO, WELCOME), and the
/// split of its bytes into frames for the core. What the frames mean is the core's business.
/// Loop-bound.
final class BrokerConnection: ChannelDelegate {
    /// The handshake; once `open`, frames go to the core. Closing is `session.isOpen == false`.
    enum Phase { case preamble, hello, open }

    /// The core's side of this connection.
    let session: ConnectionState
    let channel: Channel
    let credentials: PeerCredentials?
    /// The server owns every connection and outlives it, so an unchecked reference is safe and
    /// avoids an unowned-retain on each access (it is read for every frame).
    unowned(unsafe) let server: BrokerServer
    /// The server's core, held the same way for the same reason.
    unowned(unsafe) let core: BrokerCore<BrokerServer>
    private(set) var phase = Phase.preamble

    init(session: ConnectionState, channel: Channel, credentials: PeerCredentials?, server: BrokerServer) {
        self.session = session
        self.channel = channel
        self.credentials = credentials
        self.server = server
        self.core = server.core
    }

    /// Who this is, as the leading fields of its log lines: `conn`, `uid`, `pid`, `name`.
    var logFields: [(String, String)] {
        var fields = [("conn", "\(session.id)")]
        if let credentials { fields += [("uid", "\(credentials.uid)"), ("pid", "\(credentials.pid)")] }
        if !session.name.isEmpty { fields.append(("name", session.name)) }
        return fields
    }

    /// Logs one event about this connection (see `BrokerServer.log`).
    func log(_ level: LogLevel, _ event: String, _ fields: [(String, String)] = [], _ message: String) {
        server.logEvent(level, self, event: event, fields: fields, message)
    }

    // MARK: Bytes to frames

    func channelReceived(_ channel: Channel, _ bytes: UnsafeRawBufferPointer) -> Int {
        var offset = 0
        do {
            // Stops where the core paused this connection (backpressure): the rest is kept and
            // offered again when reading resumes.
            while offset < bytes.count && session.isOpen && session.blockedBy == 0 {
                let rest = UnsafeRawBufferPointer(rebasing: bytes[offset...])
                if phase != .open {
                    guard let used = try handshake(rest) else { break }
                    offset += used
                    continue
                }
                switch try FrameSplitter.next(rest, maxFrame: server.config.maxFrameBytes) {
                case .needMore:
                    core.endOfBatch(session)
                    return offset
                case .frame(let frame, let consumed):
                    offset += consumed
                    try core.received(frame, from: session)
                }
            }
        } catch {
            fail(error)
            core.endOfBatch(session)
            return bytes.count
        }
        core.endOfBatch(session)
        return offset
    }

    /// The preamble, then HELLO (answered with WELCOME). Returns the bytes used, nil for "need more".
    private func handshake(_ bytes: UnsafeRawBufferPointer) throws(WireError) -> Int? {
        if phase == .preamble {
            guard try Preamble.check(bytes) != nil else { return nil }
            phase = .hello
            return WireFormat.preambleSize
        }
        switch try FrameSplitter.next(bytes, maxFrame: WireFormat.maxHandshakeFrame) {
        case .needMore:
            return nil
        case .frame(let frame, let consumed):
            guard frame.type == .hello else {
                throw WireError(.unexpectedFrame, "expected HELLO after the preamble, got \(frame.type.name)")
            }
            guard case .hello(let clientName, let flags) = try Frame.decode(type: .hello, body: frame.body) else { return consumed }
            try core.hello(session, name: clientName, flags: flags)
            phase = .open
            send(.welcome(
                version: WireFormat.version, maxFrame: UInt32(server.config.maxFrameBytes),
                connectionID: session.id, brokerName: server.config.brokerName))
            log(.debug, "connected", [], "connected")
            server.handshakeCompleted()
            return consumed
        }
    }

    // MARK: Output

    func send(_ frame: Frame) {
        channel.write(frame.encoded())
    }

    /// A protocol violation: tell the client why, log one line, close only this connection.
    func fail(_ error: WireError) {
        guard session.isOpen else { return }
        core.countProtocolError()
        log(.warning, "closed", [("reason", "protocol-error"), ("code", error.code.name)], "closing: \(error)")
        send(.error(code: error.code, requestID: 0, message: error.message))
        close(graceNanos: 2_000_000_000)
    }

    /// Stops delivering to it and reading from it; closes once its output is flushed.
    func close(graceNanos: UInt64) {
        core.closing(session)
        channel.closeAfterFlush(graceNanos: graceNanos)
    }

    // MARK: Channel events

    func channelBecameWritable(_ channel: Channel) {
        core.becameWritable(session)
    }

    func channelClosed(_ channel: Channel, _ reason: Channel.CloseReason) {
        core.closing(session)
        server.connectionClosed(self, reason: reason)
    }
}
