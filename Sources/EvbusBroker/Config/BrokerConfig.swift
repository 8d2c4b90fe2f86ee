public import EvbusIO
import EvbusWire

/// What the broker does when a subscriber's write queue passes the high watermark.
public enum SlowConsumerPolicy: String, Sendable, CaseIterable, Codable {
    /// Stop reading from the publishers feeding it until it drains below the low watermark. Nothing is lost.
    case backpressure
    /// Discard deliveries to it until it drains below the low watermark; each discard is counted.
    case drop
    /// Send it `slow-consumer` and close its connection; counted.
    case disconnect

    /// From SUBSCRIBE's policy byte (`SlowPolicyCode`); nil for 0, the broker's own.
    init?(code: UInt8) {
        switch code {
        case SlowPolicyCode.backpressure: self = .backpressure
        case SlowPolicyCode.drop: self = .drop
        case SlowPolicyCode.disconnect: self = .disconnect
        default: return nil
        }
    }
}

/// Every broker setting, each with a default, so `evbus broker` runs with no file at all.
/// `Configs/broker.json` lists them with their defaults; `docs/CONFIG.md` explains each.
public struct BrokerConfig: Sendable, Equatable {
    /// The socket to listen on; nil means the usual resolution (`$EVBUS_SOCKET`, `$XDG_RUNTIME_DIR`, /tmp).
    public var socketPath: String? = nil
    /// File mode of the socket; 0600 lets only the broker's user connect.
    public var socketMode: UInt32 = 0o600
    /// Largest frame (type byte + body) a client may send, and the limit announced in WELCOME.
    public var maxFrameBytes: Int = 1 << 20
    /// A connection's write queue above this is "slow" (see `slowConsumerPolicy`).
    public var highWatermarkBytes: Int = 4 << 20
    /// ...until it drains to this.
    public var lowWatermarkBytes: Int = 1 << 20
    public var slowConsumerPolicy: SlowConsumerPolicy = .backpressure
    /// A connection that has not completed the handshake (preamble and HELLO) by then is closed.
    public var handshakeTimeoutMillis: Int = 10_000
    /// On SIGTERM: how long clients get to take what is queued to them before the broker exits.
    public var shutdownGraceMillis: Int = 2_000
    /// Subscriptions one connection may hold at once.
    public var maxSubscriptionsPerConnection: Int = 10_000
    public var logLevel: LogLevel = .info
    /// The name the broker gives in WELCOME.
    public var brokerName: String = "evbus"
    /// Where durable queues and persistent messages are kept (docs/DURABILITY.md); nil keeps
    /// everything in memory (what `Broker.start` does unless told; `evbus broker` defaults to
    /// `$XDG_STATE_HOME/evbus`).
    public var dataDir: String? = nil
    /// When persistent messages are synced to disk before being confirmed.
    public var sync: SyncMode = .always
    /// Size at which the log starts a new segment file.
    public var segmentBytes: Int = 64 << 20
    /// Bytes of ready messages a durable queue keeps in memory (at most `highWatermarkBytes`); its
    /// persistent backlog beyond that stays on disk only until consumers catch up.
    public var durableQueueMemoryBytes: Int = 2 << 20
    /// Exchanges, queues and bindings that exist from the start (see docs/ROUTING.md).
    public var exchanges: [DeclaredExchange] = []
    public var queues: [DeclaredQueue] = []
    public var bindings: [DeclaredBinding] = []
    /// Access rules (docs/SECURITY.md); nil = no `access` section: everyone who can connect may
    /// do everything. With rules, what none of them grants is refused.
    public var access: [AccessRule]? = nil
    /// Per-uid limits; the first entry that matches a uid applies to it.
    public var quotas: [Quota] = []
    /// Group that owns the socket file (name or number); nil leaves it the broker's.
    public var socketGroup: String? = nil

    public init() {}
}
