public import EvbusBroker
public import EvbusWire
import Foundation

/// Where a broker rule test runs: the core alone in memory, or a live broker over a real socket.
/// One test body runs against both (as Hummingbird runs one test against `.router` and `.live`),
/// so the rules are known to be the core's, and the glue is known to carry them faithfully.
public enum RuleTarget: String, CaseIterable, Sendable, CustomStringConvertible {
    case core, live
    public var description: String { rawValue }
}

/// A broker under a rule test, and its clients speaking frames.
public final class RuleBroker {
    public let target: RuleTarget
    private let memory: MemoryBroker?
    private let live: InProcessBroker?

    /// - Parameter configure: the settings, for either target.
    public init(_ target: RuleTarget, configure: (inout CoreSettings) -> Void = { _ in }) throws {
        self.target = target
        var settings = CoreSettings()
        configure(&settings)
        switch target {
        case .core:
            memory = MemoryBroker(settings: settings)
            live = nil
        case .live:
            memory = nil
            live = try InProcessBroker { config in
                config.slowConsumerPolicy = settings.slowConsumerPolicy
                config.highWatermarkBytes = settings.highWatermarkBytes
                config.lowWatermarkBytes = settings.lowWatermarkBytes
                config.maxSubscriptionsPerConnection = settings.maxSubscriptionsPerConnection
            }
        }
    }

    deinit { live?.shutdown() }

    /// A client that has completed its handshake.
    public func connect(_ name: String = "rule") throws -> Client {
        if let memory { return Client(memory: memory, session: memory.connect()) }
        let raw = try RawClient(socketPath: live!.socketPath)
        raw.send(WireFormat.preamble + Frame.hello(clientName: name).encoded())
        guard case .welcome(_, _, let id, _) = try raw.readFrame() else { throw TestSupportError("expected WELCOME") }
        return Client(raw: raw, connectionID: id)
    }

    /// Lets `duration` pass: the core's clock moves at once; a live broker is waited for.
    public func advance(by duration: Duration) async throws {
        if let memory { return memory.advance(by: duration) }
        try await Task.sleep(for: duration + .milliseconds(50))
    }

    /// `client` hangs up; returns once the broker has handled it.
    public func disconnect(_ client: Client) async throws {
        let before = stat("connections")
        client.disconnect()
        guard await eventually(20, { stat("connections") < before }) else {
            throw TestSupportError("the broker did not notice the hang-up")
        }
    }

    /// A counter from the broker's statistics.
    public func stat(_ name: String) -> UInt64 {
        memory?.stat(name) ?? live!.stat(name)
    }

    /// One client: frames in, frames out.
    public final class Client {
        private let memory: MemoryBroker?
        private let session: ConnectionState?
        private let raw: RawClient?
        /// Its id (WELCOME's), which names its inbox.
        public let connectionID: UInt64
        private var pingToken: UInt64 = 0

        init(memory: MemoryBroker, session: ConnectionState) {
            self.memory = memory
            self.session = session
            raw = nil
            connectionID = session.id
        }

        init(raw: RawClient, connectionID: UInt64) {
            memory = nil
            session = nil
            self.raw = raw
            self.connectionID = connectionID
        }

        public var inbox: String { Inbox.name(connectionID: connectionID) }

        public func send(_ frames: Frame...) {
            if let memory { return memory.send(frames, from: session!) }
            raw!.send(frames.flatMap { $0.encoded() })
        }

        /// One frame given as its exact bytes (type and length included).
        public func send(bytes: [UInt8]) {
            if let memory { return memory.send(bytes: bytes, from: session!) }
            raw!.send(bytes)
        }

        /// The next frame the broker sent this client; throws if there is none (in memory) or
        /// none comes (live, after a generous timeout: a missing frame fails, never hangs).
        public func next() throws -> Frame {
            if let memory {
                guard let frame = try memory.nextFrame(for: session!) else { throw TestSupportError("no frame was sent to this client") }
                return frame
            }
            return try raw!.readFrame()
        }

        /// Every frame the broker sent this client before answering a PING sent now: what the
        /// broker did with everything sent so far, with nothing left to arrive.
        public func drain() throws -> [Frame] {
            pingToken += 1
            send(.ping(token: pingToken))
            var frames: [Frame] = []
            while true {
                let frame = try next()
                if case .pong(let token) = frame, token == pingToken { return frames }
                frames.append(frame)
            }
        }

        /// Hangs up (see `RuleBroker.disconnect` to wait until the broker has noticed).
        func disconnect() {
            if let memory { return memory.disconnect(session!) }
            shutdown(raw!.fd, Int32(SHUT_RDWR))
        }
    }
}
