import Evbus
import EvbusTestSupport
import Foundation
import Synchronization

/// A well-behaved peer that watches `keep.#` while a test misbehaves on another connection, and
/// proves afterwards that it lost nothing and still works.
final class Bystander: Sendable {
    let peer: Peer
    let publisher: Peer
    let received = Mutex<[String]>([])
    private let subscription: Subscription

    init(_ broker: InProcessBroker) async throws {
        peer = try await broker.connect("bystander")
        publisher = try await broker.connect("bystander-pub")
        subscription = try await peer.subscribe("keep.#")
        Task { [subscription, weak self] in
            for try await e in subscription { self?.received.withLock { $0.append(e.text) } }
        }
        try await publisher.publish("keep.before", "before")
        try await publisher.flush()
    }

    /// Publishes one more message and checks both arrived, in order.
    func stillWorks() async throws -> Bool {
        try await publisher.publish("keep.after", "after")
        try await publisher.flush()
        return await eventually { self.received.withLock { $0 } == ["before", "after"] }
    }
}
