import EvbusIO

/// Deliveries from one queue. Iterate it (`for try await delivery in consumer`) or, when created
/// with a handler, keep it to cancel later.
///
/// Iteration ends normally after `cancel()` or `Peer.close()`; it throws `consumer-cancelled` if the
/// broker cancelled the consumer (its queue was deleted) and `connection-lost` if the connection failed.
/// An iterated consumer is cancelled once it and its iterators are gone (e.g. after `break`ing
/// out of `for try await`): its unacknowledged deliveries go back to the queue.
public final class Consumer: AsyncSequence, Sendable {
    public typealias Element = Delivery

    /// The queue consumed from (the broker's name for a broker-named queue).
    public let queue: String
    /// The consumer id ("consumer tag") on this connection.
    public let id: UInt32
    let buffer: DeliveryBuffer<Delivery>?
    let peer: Peer

    init(queue: String, id: UInt32, buffer: DeliveryBuffer<Delivery>?, peer: Peer) {
        self.queue = queue
        self.id = id
        self.buffer = buffer
        self.peer = peer
    }

    /// Stops the consumer. Its unacknowledged deliveries go back to the queue (redelivered to
    /// others, flagged); iteration ends.
    public func cancel() async throws {
        try await peer.cancel(self)
    }

    deinit {
        // Iterated, and neither this sequence nor any iterator of it is left (say, a `break` out of
        // `for try await`): nobody will read what it takes, so stop it. A handler consumer keeps
        // running until cancelled.
        guard buffer != nil else { return }
        let core = peer.core
        let id = self.id
        try? peer.loop.execute { core.value.consumerDropped(id) }
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        /// Keeps the consumer alive (and consuming) while an iterator exists.
        let consumer: Consumer

        public mutating func next() async throws -> Delivery? {
            guard let buffer = consumer.buffer else { return nil }
            return try await buffer.next()
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(consumer: self) }
}
