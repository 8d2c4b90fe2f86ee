/// The settings the broker's rules depend on (a subset of `BrokerConfig`, which also holds the
/// server's: socket, log level, handshake timeout).
public struct CoreSettings: Sendable, Equatable {
    /// What happens to a subscriber whose output passes the high watermark.
    public var slowConsumerPolicy: SlowConsumerPolicy = .backpressure
    /// Bytes of output (or of a queue's ready messages) past which backpressure starts...
    public var highWatermarkBytes = 4 << 20
    /// ...and below which it ends.
    public var lowWatermarkBytes = 1 << 20
    public var maxSubscriptionsPerConnection = 10_000
    /// Bytes of ready messages a durable queue keeps in memory; past that its persistent backlog
    /// stays on disk only and is read back as consumers catch up (docs/DURABILITY.md §4).
    public var durableQueueMemoryBytes = 2 << 20

    public init() {}

    public init(_ config: BrokerConfig) {
        slowConsumerPolicy = config.slowConsumerPolicy
        highWatermarkBytes = config.highWatermarkBytes
        lowWatermarkBytes = config.lowWatermarkBytes
        maxSubscriptionsPerConnection = config.maxSubscriptionsPerConnection
        // Past the high watermark backpressure would pause publishers before a queue could page.
        durableQueueMemoryBytes = min(config.durableQueueMemoryBytes, config.highWatermarkBytes)
    }
}
