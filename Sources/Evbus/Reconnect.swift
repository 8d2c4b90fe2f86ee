import EvbusIO
import Synchronization

/// What a peer does when its connection to the broker drops (docs/LIBRARY.md, "Reconnecting").
///
/// With a policy other than `.never`, the peer waits `initialDelay`, then tries to connect again,
/// doubling the wait after each failed try up to `maxDelay`, each wait spread by ±`jitter` so that
/// many peers of one restarted broker do not all knock at once. Once connected it restores what it
/// had and carries on; after `giveUpAfter` without a connection it stops and fails like a peer
/// without a policy.
public struct ReconnectPolicy: Sendable, Hashable {
    /// The first wait after a drop.
    public var initialDelay: Duration
    /// The longest wait between tries.
    public var maxDelay: Duration
    /// Each wait is this many times the one before (at least 1).
    public var multiplier: Double
    /// Each wait is moved at random by up to this fraction of itself (0 = none, 0.2 = ±20%).
    public var jitter: Double
    /// How long to keep trying after the connection dropped; nil = for ever.
    public var giveUpAfter: Duration?
    /// What a publish does while the peer is disconnected and its buffer (`Peer.Options
    /// .outboxHighWatermark` bytes) is full.
    public var whenBufferFull: BufferFull
    let enabled: Bool

    public enum BufferFull: Sendable, Hashable {
        /// Suspend the publisher until the peer is back and the buffer drains.
        case wait
        /// Throw `connection-lost` at once; nothing of that publish is queued.
        case fail
    }

    public init(
        initialDelay: Duration = .milliseconds(100), maxDelay: Duration = .seconds(5), multiplier: Double = 2,
        jitter: Double = 0.2, giveUpAfter: Duration? = nil, whenBufferFull: BufferFull = .wait
    ) {
        self.initialDelay = initialDelay
        self.maxDelay = max(maxDelay, initialDelay)
        self.multiplier = max(multiplier, 1)
        self.jitter = min(max(jitter, 0), 1)
        self.giveUpAfter = giveUpAfter
        self.whenBufferFull = whenBufferFull
        self.enabled = true
    }

    private init(disabled: Void) {
        initialDelay = .zero
        maxDelay = .zero
        multiplier = 1
        jitter = 0
        giveUpAfter = nil
        whenBufferFull = .fail
        enabled = false
    }

    /// False for `.never`.
    public var reconnects: Bool { enabled }

    /// The default: 100 ms doubling to 5 s, ±20%, never give up, publishers wait.
    public static let standard = ReconnectPolicy()
    /// No reconnecting: when the connection drops, everything fails with `connection-lost`.
    public static let never = ReconnectPolicy(disabled: ())

    /// The wait before try number `attempt` (1-based), before jitter.
    func baseDelay(attempt: Int) -> Duration {
        var delay = Double(initialDelay.wholeNanoseconds)
        let cap = Double(maxDelay.wholeNanoseconds)
        for _ in 1..<max(attempt, 1) where delay < cap { delay *= multiplier }
        return .nanoseconds(Int64(min(delay, cap)))
    }

    /// The wait before try number `attempt`, jittered by `random` in 0...1.
    func delay(attempt: Int, random: Double) -> Duration {
        let base = Double(baseDelay(attempt: attempt).wholeNanoseconds)
        let spread = base * jitter * (2 * random - 1)
        return .nanoseconds(Int64(max(base + spread, 0)))
    }
}

/// A change in a peer's connection to the broker.
public enum ConnectionEvent: Sendable, Hashable, CustomStringConvertible {
    /// The connection dropped; the peer will try again (if its policy says so).
    case disconnected(EvbusError)
    /// Try number `attempt` starts after waiting `after`.
    case reconnecting(attempt: Int, after: Duration)
    /// Connected again as `connectionID`, with everything the peer had restored.
    case reconnected(connectionID: UInt64)
    /// The peer stopped trying (`ReconnectPolicy.giveUpAfter` passed); it is closed.
    case gaveUp(EvbusError)

    public var description: String {
        switch self {
        case .disconnected(let e): "disconnected: \(e)"
        case .reconnecting(let attempt, let after): "reconnecting (attempt \(attempt)) in \(after)"
        case .reconnected(let id): "reconnected as connection \(id)"
        case .gaveUp(let e): "gave up reconnecting: \(e)"
        }
    }
}

/// Hands connection events to every `Peer.connectionEvents()` sequence and to the
/// `Options.onConnectionEvent` callback. Events are produced on the peer's loop.
final class ConnectionEvents: Sendable {
    private struct State {
        var streams: [Int: AsyncStream<ConnectionEvent>.Continuation] = [:]
        var nextKey = 0
        var finished = false
    }

    private let state = Mutex(State())
    let callback: (@Sendable (ConnectionEvent) -> Void)?

    init(callback: (@Sendable (ConnectionEvent) -> Void)?) {
        self.callback = callback
    }

    /// A new sequence of the events from now on (buffered, newest 256 kept, so a slow reader
    /// never holds the loop up).
    func stream() -> AsyncStream<ConnectionEvent> {
        let (stream, continuation) = AsyncStream<ConnectionEvent>.makeStream(bufferingPolicy: .bufferingNewest(256))
        let key: Int? = state.withLock { s in
            if s.finished { return nil }
            s.nextKey += 1
            s.streams[s.nextKey] = continuation
            return s.nextKey
        }
        guard let key else {
            continuation.finish()
            return stream
        }
        continuation.onTermination = { [weak self] _ in self?.state.withLock { _ = $0.streams.removeValue(forKey: key) } }
        return stream
    }

    func emit(_ event: ConnectionEvent) {
        let streams = state.withLock { Array($0.streams.values) }
        for s in streams { s.yield(event) }
        callback?(event)
    }

    /// The peer is closed for good: every sequence ends.
    func finish() {
        let streams = state.withLock { s -> [AsyncStream<ConnectionEvent>.Continuation] in
            s.finished = true
            defer { s.streams.removeAll() }
            return Array(s.streams.values)
        }
        for s in streams { s.finish() }
    }
}
