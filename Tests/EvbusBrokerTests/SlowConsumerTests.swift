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

    /// 1 KiB frames, and frames larger than the socket's kernel buffer (which then holds part of
    /// one: the case where closing at once left a torn frame last).
    @Test(arguments: [3, 300_000])
    func disconnectClosesOnlyTheSlowReader(extraBytes: Int) async throws {
        let broker = try InProcessBroker(configure: smallWatermarks(.disconnect))
        defer { broker.shutdown() }
        let slow = try stalledSubscriber(broker)
        let bystander = try await Bystander(broker)
        let publisher = try await broker.connect("fast")
        let extra = [UInt8](repeating: 7, count: extraBytes)
        for i in 0..<(extraBytes > 1000 ? 20 : Self.messages) { try await publisher.publish("flood", numbered(i) + extra) }
        try await publisher.flush()
        #expect(await eventually { broker.stat("slow_consumer_disconnects") == 1 })
        // Stalled on past the old half-second grace, then reading: whole frames, ending with the
        // ERROR, then EOF; never a torn frame.
        try await Task.sleep(for: .seconds(1))
        let frames = slow.readUntilClosed()
        guard case .error(.slowConsumer, 0, _)? = frames.last else {
            Issue.record("the last frame was not ERROR slow-consumer: \(frames.suffix(2))")
            return
        }
        #expect(slow.unparsedBytes == 0, "a torn frame of \(slow.unparsedBytes) bytes before EOF")
        #expect(frames.dropLast().allSatisfy { if case .deliver = $0 { true } else { false } })
        #expect(broker.logLines.contains("slow consumer"))
        // The publisher and everyone else carry on.
        try await publisher.publish("flood", "after")
        try await publisher.flush()
        #expect(try await bystander.stillWorks())
        await publisher.close()
    }
}
