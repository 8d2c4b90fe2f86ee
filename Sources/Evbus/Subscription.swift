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
