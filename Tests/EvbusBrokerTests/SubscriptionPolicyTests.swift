import Evbus
import EvbusBroker
import EvbusTestSupport
import EvbusWire
import Testing

/// A slow-consumer policy per subscription (PROTOCOL.md §8): on one topic at once, a `drop`
/// subscriber that stalls never slows the publisher, and a `backpressure` one never loses a message.
@Suite struct SubscriptionPolicyTests {
    static func settings() -> CoreSettings {
        var s = CoreSettings()
        s.highWatermarkBytes = 4096
        s.lowWatermarkBytes = 1024
        s.slowConsumerPolicy = .disconnect  // the broker's default: neither subscription uses it
        return s
    }

    func drain(_ b: MemoryBroker, _ s: ConnectionState) throws -> [Frame] {
        var out: [Frame] = []
        while let f = try b.nextFrame(for: s) { out.append(f) }
        return out
    }

    /// A `drop` subscriber (id 1) and a `backpressure` one (id 2) on topic `t`, and a publisher.
    func dropperAndKeeper() throws -> (MemoryBroker, ConnectionState, ConnectionState, ConnectionState) {
        let b = MemoryBroker(settings: Self.settings())
        let dropper = b.connect()
        let keeper = b.connect()
        b.send([.subscribe(subscriptionID: 1, pattern: "t", policy: SlowPolicyCode.drop)], from: dropper)
        b.send([.subscribe(subscriptionID: 2, pattern: "t", policy: SlowPolicyCode.backpressure)], from: keeper)
        _ = try drain(b, dropper)
        _ = try drain(b, keeper)
        return (b, dropper, keeper, b.connect())
    }

    func payloads(_ frames: [Frame]) -> [Int] {
        frames.compactMap { if case .deliver(_, _, _, _, let p) = $0 { Int(p[0]) * 256 + Int(p[1]) } else { nil } }
    }

    @Test func aStalledDropSubscriberNeverSlowsThePublisher() throws {
        let (b, dropper, keeper, publisher) = try dropperAndKeeper()
        var received: [Int] = []
        for i in 0..<200 {  // the keeper reads as it goes; the dropper never reads
            b.send([.publish(topic: "t", payload: [UInt8(i >> 8), UInt8(i & 255)] + [UInt8](repeating: 0, count: 100))], from: publisher)
            received += payloads(try drain(b, keeper))
        }
        #expect(received == Array(0..<200), "the backpressure subscriber got every message, in order")
        #expect(b.stat("backpressure_pauses") == 0, "the stalled drop subscriber never paused the publisher")
        #expect(b.stat("slow_consumer_disconnects") == 0)
        let dropped = b.stat("subscription.\(dropper.id).1.dropped")
        #expect(dropped > 100, "most went nowhere for the stalled dropper: \(dropped)")
        #expect(b.stat("dropped") == dropped)
        let kept = payloads(try drain(b, dropper))
        #expect(kept.count + Int(dropped) == 200, "what it did not drop it received, in order")
        #expect(kept == kept.sorted())
    }

    @Test func aStalledBackpressureSubscriberLosesNothingBesideADropperOnTheSameTopic() throws {
        let (b, dropper, keeper, publisher) = try dropperAndKeeper()
        for i in 0..<200 {  // now both stall: the publisher is paused for the keeper
            b.send([.publish(topic: "t", payload: [UInt8(i >> 8), UInt8(i & 255)] + [UInt8](repeating: 0, count: 100))], from: publisher)
        }
        #expect(b.stat("backpressure_pauses") >= 1)
        #expect(b.stat("subscription.\(keeper.id).2.paused") >= 1)
        // The keeper catches up: the publisher resumes, and everything it sent arrives.
        var received: [Int] = []
        for _ in 0..<50 { received += payloads(try drain(b, keeper)) }
        #expect(received == Array(0..<200))
        #expect(b.stat("subscription.\(keeper.id).2.dropped") == 0)
        #expect(b.stat("subscription.\(dropper.id).1.dropped") > 0)
    }

    @Test func withoutAPolicyTheBrokersOwnApplies() throws {
        let b = MemoryBroker(settings: Self.settings())
        let plain = b.connect()
        b.send([.subscribe(subscriptionID: 1, pattern: "t")], from: plain)
        _ = try drain(b, plain)
        let publisher = b.connect()
        for i in 0..<100 { b.send([.publish(topic: "t", payload: [UInt8(i)] + [UInt8](repeating: 0, count: 100))], from: publisher) }
        #expect(b.stat("slow_consumer_disconnects") == 1, "the broker's disconnect policy")
    }

    @Test func anUndefinedPolicyIsAMalformedFrame() throws {
        let b = MemoryBroker()
        let s = b.connect()
        var bytes = Frame.subscribe(subscriptionID: 1, pattern: "t", policy: 3).encoded()
        bytes[bytes.count - 1] = 9
        b.send(bytes: bytes, from: s)
        guard case .error(.malformedFrame, 0, let message)? = try drain(b, s).first else { return #expect(Bool(false)) }
        #expect(message.contains("policy 9"))
    }
}

/// The same through a real socket and the library: `drop` and `backpressure` subscribers on one
/// topic, each stalled, each getting what its policy promises; the counters reach the subscriber.
@Suite struct SubscriptionPolicyLiveTests {
    @Test func theLibraryAndTheBrokerKeepEachSubscriptionsPolicy() async throws {
        let broker = try InProcessBroker { c in
            c.highWatermarkBytes = 64 * 1024
            c.lowWatermarkBytes = 16 * 1024
        }
        defer { broker.shutdown() }
        let dropPeer = try await broker.connect("dropper")
        let dropped = try await dropPeer.subscribe(["t"], policy: .drop)
        let keepPeer = try await broker.connect("keeper")
        let kept = try await keepPeer.subscribe(["t"], policy: .backpressure)
        let publisher = try await broker.connect("publisher")
        // Neither subscriber iterates yet: both stall once their library buffers fill.
        let total = 20_000
        let publishing = Task {
            for i in 0..<total { try await publisher.publish("t", withUnsafeBytes(of: UInt32(i).littleEndian, Array.init) + [UInt8](repeating: 0, count: 200)) }
            try await publisher.flush()
        }
        #expect(await eventually(30) { broker.stat("backpressure_pauses") >= 1 }, "the stalled keeper pauses the publisher")
        // The keeper reads everything, in order.
        var next = 0
        for try await event in kept {
            let i = Int(event.payload.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }.littleEndian)
            guard i == next else { Issue.record("keeper got \(i), expected \(next)"); break }
            next += 1
            if next == total { break }
        }
        #expect(next == total)
        try await publishing.value
        // The dropper is still stalled (its peer stopped reading when its buffer filled), so it
        // cannot ask for STATS itself; the broker's counters say what it lost.
        #expect(broker.stat("subscription.\(dropPeer.connectionID).\(dropped.ids[0]).dropped") > 0, "the stalled dropper lost messages, as it asked")
        let keeperCounts = try await kept.slowConsumerCounts()
        #expect(keeperCounts.dropped == 0 && keeperCounts.paused >= 1)
        await dropPeer.close()
        await keepPeer.close()
        await publisher.close()
    }
}
