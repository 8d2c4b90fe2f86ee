import Evbus
import EvbusTestSupport
import Testing

/// Disk use follows the backlog, not the history: settled segments go, and one kept alive by a few
/// unsettled messages is compacted, with those messages intact after a restart.
@Suite struct DiskSpaceTests {
    func stat(_ peer: Peer, _ name: String) async throws -> UInt64 {
        try await peer.brokerStats().first { $0.name == name }?.value ?? 0
    }

    @Test func aFewUnsettledMessagesDoNotKeepTheWholeLogOnDisk() async throws {
        let dataDir = TestPaths.dataDirectory("space")
        let socket = TestPaths.socket("space")
        var broker = try InProcessBroker { $0.dataDir = dataDir; $0.socketPath = socket; $0.segmentBytes = 16 << 10 }
        let peer = try await broker.connect("producer")
        _ = try await peer.declareQueue("stuck", QueueOptions(durable: true))
        _ = try await peer.declareQueue("flow", QueueOptions(durable: true))
        // Two messages nobody takes, in the first segment.
        try await peer.publish(to: "", key: "stuck", "keep 1", confirm: true, persistent: true)
        try await peer.publish(to: "", key: "stuck", "keep 2", confirm: true, persistent: true)
        let worker = try await broker.connect("worker")
        let done = Collector<String>()
        _ = try await worker.consume("flow", ack: .manual, prefetch: 50) { delivery in
            done.add(delivery.text)
            try? delivery.ack()
        }
        // About 2 MB of history through 16 KiB segments: over a hundred of them written.
        let payload = String(repeating: "x", count: 200)
        for i in 0..<10_000 { try await peer.publish(to: "", key: "flow", "\(i) \(payload)", confirm: true, persistent: true) }
        try await peer.waitForConfirms()
        #expect(await eventually { done.count == 10_000 })
        // Settled segments are deleted and the one the two kept alive is compacted away.
        let shrank = try await eventually { try await stat(peer, "store_segments") <= 4 }
        let segments = try await stat(peer, "store_segments")
        let all = try await peer.brokerStats().filter { $0.name.hasPrefix("store") }.map { "\($0.name)=\($0.value)" }
        #expect(shrank, "segments: \(segments) \(all)")
        #expect(try await stat(peer, "store_compactions") >= 1)
        // Rewriting stays a small share of the traffic (what pinned old segments, now and then).
        let rewritten = try await stat(peer, "store_rewritten")
        #expect(rewritten < 500, "\(rewritten) messages rewritten for 10,002 persisted")
        #expect(try await stat(peer, "store_bytes") < 96 << 10)
        await worker.close()
        await peer.close()
        broker.shutdown()

        broker = try InProcessBroker { $0.dataDir = dataDir; $0.socketPath = socket; $0.segmentBytes = 16 << 10 }
        defer { broker.shutdown() }
        let reader = try await broker.connect("reader")
        let queues = try await reader.topology().queues
        #expect(queues.first { $0.name == "stuck" }?.ready == 2)
        #expect(queues.first { $0.name == "flow" }?.ready == 0)
        let kept = try await reader.consume("stuck", ack: .auto)
        var got: [String] = []
        for try await d in kept {
            got.append(d.text)
            #expect(!d.redelivered)
            if got.count == 2 { break }
        }
        #expect(got == ["keep 1", "keep 2"])
        await reader.close()
    }
}
