/// Events matching one or more patterns. Iterate it (`for try await event in subscription`) or, when
/// created with a handler, just keep it to cancel later.
///
/// Iteration ends normally after `cancel()` or `Peer.close()`, and throws `connection-lost` if the
/// connection to the broker fails.
public final class Subscription: AsyncSequence, Sendable {
    public typealias Element = Event

    public let patterns: [String]
    /// Broker-side subscription ids, one per pattern.
    public let ids: [UInt32]
    let queue: EventQueue?
    let peer: Peer

    init(patterns: [String], ids: [UInt32], queue: EventQueue?, peer: Peer) {
        self.patterns = patterns
        self.ids = ids
        self.queue = queue
        self.peer = peer
    }

    /// What the broker counted against this subscription's patterns: deliveries it dropped (its
    /// policy is `drop`) and times it paused a publisher for it (`backpressure`). A STATS round
    /// trip on this peer's connection: while a full subscription buffer has stopped this peer
    /// reading, the answer waits until the buffer is drained.
    public func slowConsumerCounts() async throws -> (dropped: UInt64, paused: UInt64) {
        let entries = try await peer.brokerStats()
        var dropped: UInt64 = 0, paused: UInt64 = 0
        for id in ids {
            let prefix = "subscription.\(peer.connectionID).\(id)."
            for e in entries where e.name.hasPrefix(prefix) {
                if e.name.hasSuffix(".dropped") { dropped += e.value } else if e.name.hasSuffix(".paused") { paused += e.value }
            }
        }
        return (dropped, paused)
    }

    /// Unsubscribes every pattern; iteration then ends.
    public func cancel() async throws {
        try await peer.unsubscribe(self)
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let queue: EventQueue?

        public mutating func next() async throws -> Event? {
            guard let queue else { return nil }
            return try await queue.next()
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(queue: queue) }
}

/// What the broker does with one subscription's events while its peer reads too slowly (its
/// output over the broker's high watermark; PROTOCOL.md §8), overriding the broker's setting.
public enum SubscriptionPolicy: String, Sendable, CaseIterable {
    /// Whatever the broker's `slowConsumerPolicy` says.
    case brokerDefault = "default"
    /// Pause the publishers feeding it: nothing is lost, they wait.
    case backpressure
    /// Discard its events until it catches up: publishers never wait for it.
    case drop
    /// Cut its connection off (ERROR `slow-consumer`).
    case disconnect

    var code: UInt8 {
        switch self {
        case .brokerDefault: SlowPolicyCode.brokerDefault
        case .backpressure: SlowPolicyCode.backpressure
        case .drop: SlowPolicyCode.drop
        case .disconnect: SlowPolicyCode.disconnect
        }
    }
}
