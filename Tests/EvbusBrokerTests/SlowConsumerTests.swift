import Evbus
import EvbusTestSupport
import EvbusWire
import Foundation
import Testing

/// A subscriber that stops reading must never grow the broker's memory without bound.
@Suite struct SlowConsumerTests {
    static let messages = 3000
    static let payload = [UInt8](repeating: 0x2A, count: 1024)

    func smallWatermarks(_ policy: SlowConsumerPolicy) -> (inout BrokerConfig) -> Void {
        { config in
            config.highWatermarkBytes = 64 << 10
            config.lowWatermarkBytes = 16 << 10
            config.slowConsumerPolicy = policy
        }
    }

    /// A raw subscriber on `flood` that reads nothing until told to.
    func stalledSubscriber(_ broker: InProcessBroker) throws -> RawClient {
        let client = try RawClient.handshaken(broker.socketPath, name: "stalled")
        client.send(.subscribe(subscriptionID: 1, pattern: "flood"))
        guard case .ok = try client.readFrame() else { throw TestSupportError("subscribe failed") }
        return client
    }

    func numbered(_ i: Int) -> [UInt8] {
        var p = Self.payload
        withUnsafeBytes(of: UInt32(i).littleEndian) { p.replaceSubrange(0..<4, with: $0) }
        return p
    }

    /// Reads `count` DELIVER frames and returns their sequence numbers.
    func readSequence(_ client: RawClient, count: Int) throws -> [Int] {
        var seqs: [Int] = []
        while seqs.count < count {
            guard case .deliver(_, _, _, _, let payload) = try client.readFrame() else { continue }
            seqs.append(Int(payload.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }))
        }
        return seqs
    }

    @Test func backpressurePausesThePublisherAndLosesNothing() async throws {
        let broker = try InProcessBroker(configure: smallWatermarks(.backpressure))
        defer { broker.shutdown() }
        let slow = try stalledSubscriber(broker)
        var options = Peer.Options()
        options.outboxHighWatermark = 64 << 10
        options.outboxLowWatermark = 16 << 10
        let publisher = try await Peer.connect(to: broker.socketPath, name: "fast", options: options)
        let publishing = Task {
            for i in 0..<Self.messages { try await publisher.publish("flood", numbered(i)) }
            try await publisher.flush()
        }
        // The broker pauses the publisher instead of queueing 3 MB for the stalled reader...
        #expect(await eventually { broker.stat("backpressure_pauses") >= 1 })
        try await Task.sleep(nanoseconds: 200_000_000)
        #expect(broker.stat("delivered") < UInt64(Self.messages))
        // ...and once the reader reads, every message arrives, in order, exactly once.
        let seqs = try readSequence(slow, count: Self.messages)
        #expect(seqs == Array(0..<Self.messages))
        try await publishing.value
        #expect(broker.stat("dropped") == 0)
        await publisher.close()
    }

    @Test func dropDiscardsAndCountsWhatTheSlowReaderCannotTake() async throws {
        let broker = try InProcessBroker(configure: smallWatermarks(.drop))
        defer { broker.shutdown() }
        let slow = try stalledSubscriber(broker)
        let bystander = try await Bystander(broker)
        let deliveredBefore = broker.stat("delivered")
        let publisher = try await broker.connect("fast")
        for i in 0..<Self.messages { try await publisher.publish("flood", numbered(i)) }
        try await publisher.flush()
        let dropped = broker.stat("dropped")
        #expect(dropped > 0)
        #expect(broker.stat("delivered") - deliveredBefore + dropped == UInt64(Self.messages))
        // Drops are counted exactly: the stalled reader gets everything that was not dropped, in order.
        let seqs = try readSequence(slow, count: Self.messages - Int(dropped))
        #expect(seqs == seqs.sorted())
        #expect(try await bystander.stillWorks())
        await publisher.close()
    }

    @Test func disconnectClosesOnlyTheSlowReader() async throws {
        let broker = try InProcessBroker(configure: smallWatermarks(.disconnect))
        defer { broker.shutdown() }
        let slow = try stalledSubscriber(broker)
        let bystander = try await Bystander(broker)
        let publisher = try await broker.connect("fast")
        for i in 0..<Self.messages { try await publisher.publish("flood", numbered(i)) }
        try await publisher.flush()
        #expect(await eventually { broker.stat("slow_consumer_disconnects") == 1 })
        let frames = slow.readUntilClosed()
        if case .error(let code, _, _)? = frames.last { #expect(code == .slowConsumer) }
        #expect(broker.logLines.contains("slow consumer"))
        // The publisher and everyone else carry on.
        try await publisher.publish("flood", "after")
        try await publisher.flush()
        #expect(try await bystander.stillWorks())
        await publisher.close()
    }
}
