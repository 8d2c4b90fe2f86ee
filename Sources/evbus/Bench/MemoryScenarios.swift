import Evbus
import EvbusIO
import Foundation
import Synchronization

/// What the broker's resident memory does as connections come, receive and go: the figures
/// docs/BENCHMARKS.md reports as "memory". Each runs against a fresh broker, since one whose heap
/// already grew in earlier scenarios would hide the cost.
enum MemoryScenarios {
    /// Connections opened (and kept) before the idle scenario's first reading, so that what the
    /// broker spends once, on its first connections rather than on each (the first pages of its
    /// heap, the pages of its own code that run only for connections), is not counted per connection.
    static func idleWarmUp(_ connections: Int) -> Int { max(connections / 10, 1) }

    /// Broker RSS growth per idle connection, each holding one subscription: the RSS added by
    /// `connections` more once `warmUp` connections are open (0: on a fresh broker).
    static func idle(broker: BenchBroker, connections: Int, warmUp: Int) async throws -> String {
        let loop = try EventLoop.startThread(name: "bench-idle")
        defer { loop.stopAndJoin() }
        var peers: [Peer] = []
        var subscriptions: [Subscription] = []
        func open(_ i: Int) async throws {
            let peer = try await Peer.connect(to: broker.socketPath, name: "idle-\(i)", loop: loop)
            subscriptions.append(try await peer.subscribe("idle.\(i).#"))
            peers.append(peer)
        }
        for i in 0..<warmUp { try await open(i) }
        try await Task.sleep(nanoseconds: 200_000_000)
        let before = try resident(broker)
        for i in warmUp..<(warmUp + connections) { try await open(i) }
        try await Task.sleep(nanoseconds: 500_000_000)
        let after = try resident(broker)
        for p in peers { await p.close() }
        withExtendedLifetime(subscriptions) {}
        return "idle          \(connections) connections (after \(warmUp))  broker RSS \(kib(before)) -> \(kib(after))  "
            + "= \(perConnection(after - before, connections)) per connection"
    }

    /// `connections` idle subscribers, then two rounds in which each receives one 1 KiB message
    /// (one publish, fanned out to all): broker RSS per connection while idle, after each round.
    /// Every connection's output is queued in the same loop iteration, so this is what the write
    /// queues cost at their peak and whether the broker gives it back once they drain.
    static func burst(broker: BenchBroker, connections: Int) async throws -> String {
        let loop = try EventLoop.startThread(name: "bench-burst")
        defer { loop.stopAndJoin() }
        let received = Atomic<Int>(0)
        var peers: [Peer] = []
        var subscriptions: [Subscription] = []
        for i in 0..<connections {
            let peer = try await Peer.connect(to: broker.socketPath, name: "burst-\(i)", loop: loop)
            subscriptions.append(try await peer.subscribeViews("burst.all") { _ in received.add(1, ordering: .relaxed) })
            peers.append(peer)
        }
        let publisher = try await Peer.connect(to: broker.socketPath, name: "burst-publisher")
        try await Task.sleep(nanoseconds: 300_000_000)
        var readings = [try resident(broker)]
        for round in 1...2 {
            try await publisher.publish("burst.all", [UInt8](repeating: 0x62, count: 1024))
            let deadline = monotonicNanos() + 60_000_000_000
            while received.load(ordering: .relaxed) < round * connections {
                guard monotonicNanos() < deadline else {
                    throw BenchError("burst: \(received.load(ordering: .relaxed)) of \(round * connections) deliveries arrived")
                }
                try await Task.sleep(nanoseconds: 10_000_000)
            }
            // The broker gives memory back on its once-a-second timer (WriteMemory.returnAfterBurst).
            try await Task.sleep(nanoseconds: 1_500_000_000)
            readings.append(try resident(broker))
        }
        await publisher.close()
        for p in peers { await p.close() }
        withExtendedLifetime(subscriptions) {}
        let growth = readings.dropFirst().map { "+" + perConnection($0 - readings[0], connections) }
        return "burst         \(connections) connections, 1 KiB to each, twice  broker RSS \(readings.map(kib).joined(separator: " -> "))  "
            + "= \(growth.joined(separator: ", ")) per connection over idle after rounds 1 and 2"
    }

    /// `connections` connections opened, greeted (HELLO, WELCOME) and closed one after another:
    /// broker RSS before and after. What a connection leaves behind once gone should be nothing.
    static func short(broker: BenchBroker, connections: Int) async throws -> String {
        let loop = try EventLoop.startThread(name: "bench-short")
        defer { loop.stopAndJoin() }
        try await Task.sleep(nanoseconds: 200_000_000)
        let before = try resident(broker)
        for i in 0..<connections {
            let peer = try await Peer.connect(to: broker.socketPath, name: "short-\(i)", loop: loop)
            await peer.close()
        }
        try await Task.sleep(nanoseconds: 500_000_000)
        let after = try resident(broker)
        return "short         \(connections) connections opened and closed  broker RSS \(kib(before)) -> \(kib(after))  "
            + "= \(BenchReport.format(Double(after - before) / 1024 / 1024, 2)) MiB kept"
    }

    private static func resident(_ broker: BenchBroker) throws -> Int {
        let bytes = broker.residentBytes
        guard bytes > 0 else { throw BenchError("cannot read the broker's memory from /proc/\(broker.pid)/status") }
        return bytes
    }

    private static func kib(_ bytes: Int) -> String { "\(bytes / 1024) KiB" }

    private static func perConnection(_ bytes: Int, _ connections: Int) -> String {
        BenchReport.format(Double(bytes) / Double(connections) / 1024, 2) + " KiB"
    }
}
