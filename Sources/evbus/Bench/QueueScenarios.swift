import Evbus
import EvbusIO
import Synchronization

/// Work queues: 1 producer -> 1 queue -> N competing consumers, manual acks with a prefetch window.
enum QueueScenarios {
    /// Every message is acknowledged one by one as it arrives (no `multiple`), as RabbitMQ's
    /// PerfTest does by default. The figure is messages acknowledged per second; "lost" compares
    /// what the broker says was acknowledged with what was sent.
    static func workQueue(
        name: String, socket: String, messages: Int, consumers: Int, prefetch: Int, confirm: Bool = false
    ) async throws -> BenchResult {
        let pubLoop = try EventLoop.startThread(name: "bench-pub")
        let subLoop = try EventLoop.startThread(name: "bench-sub")
        defer {
            pubLoop.stopAndJoin()
            subLoop.stopAndJoin()
        }
        let queue = "bench.\(name)"
        let publisher = try await Peer.connect(to: socket, name: "bench-producer", loop: pubLoop)
        _ = try await publisher.declareQueue(queue)
        try await publisher.purgeQueue(queue)
        let acked = Receiver()
        var peers: [Peer] = []
        for _ in 0..<consumers {
            let peer = try await Peer.connect(to: socket, name: "bench-worker", loop: subLoop)
            _ = try await peer.consumeViews(queue, ack: .manual, prefetch: prefetch) { view in
                try? peer.ack(view.deliveryTag)
                acked.count.add(1, ordering: .releasing)
            }
            peers.append(peer)
        }
        let start = monotonicNanos()
        try await Publisher.run(publisher, topic: queue, count: messages, size: 16, exchange: "", confirm: confirm)
        let end = await acked.waitFor(messages)
        // The broker's own count: every message acknowledged, none left ready or unacknowledged.
        for p in peers { try await p.flush() }
        let summary = try await publisher.topology().queues.first { $0.name == queue }
        let brokerAcked = Int(summary?.acked ?? 0)
        let left = Int((summary?.ready ?? 0) + (summary?.unacked ?? 0))
        try await publisher.deleteQueue(queue)
        await publisher.close()
        for p in peers { await p.close() }
        return BenchResult(
            name: name, messages: messages, deliveries: messages, received: min(brokerAcked, acked.count.load(ordering: .acquiring)),
            nanos: end - start, extra: "  (broker: acked \(brokerAcked), left in queue \(left); prefetch \(prefetch)\(confirm ? ", confirms" : ""))")
    }
}
