import Evbus
import EvbusIO
import Glibc
import Synchronization

/// Counts what a benchmark subscriber receives, checks order, and samples one-way latency.
///
/// Payload layout written by `Publisher`: bytes 0..<8 the sequence number, 8..<16 the monotonic
/// send time in nanoseconds (every message in paced runs, every 64th otherwise; 0 = not stamped).
final class Receiver: Sendable {
    let count = Atomic<Int>(0)
    let outOfOrder = Atomic<Int>(0)
    private let expectedSeq = Atomic<UInt64>(0)
    private let samples = Mutex<[UInt64]>([])

    /// Runs on the subscriber's loop thread, one event at a time.
    func handle(_ event: Event) {
        event.payload.withUnsafeBytes { handle(payload: $0) }
    }

    func handle(_ view: EventView) { handle(payload: view.payload) }

    func handle(payload p: UnsafeRawBufferPointer) {
        do {
            let seq = p.loadUnaligned(fromByteOffset: 0, as: UInt64.self)
            if seq != expectedSeq.load(ordering: .relaxed) { outOfOrder.add(1, ordering: .relaxed) }
            expectedSeq.store(seq &+ 1, ordering: .relaxed)
            let sent = p.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
            if sent != 0 {
                let now = monotonicNanos()
                samples.withLock { $0.append(now &- sent) }
            }
        }
        count.add(1, ordering: .releasing)
    }

    func sortedLatencies() -> [UInt64] { samples.withLock { $0.sorted() } }

    /// Waits until `expected` events arrived, or nothing new came for 3 s; returns when the last arrived.
    func waitFor(_ expected: Int) async -> UInt64 {
        var watch = StallWatch(self, expected)
        while true {
            if let done = watch.check() { return done }
            try? await Task.sleep(nanoseconds: 200_000)
        }
    }

    /// `waitFor` for threads outside Swift concurrency.
    func waitForBlocking(_ expected: Int) -> UInt64 {
        var watch = StallWatch(self, expected)
        while true {
            if let done = watch.check() { return done }
            usleep(200)
        }
    }

    /// Tells when a count reached its goal or stopped moving (a lost message must not hang the bench).
    struct StallWatch {
        let receiver: Receiver
        let expected: Int
        var last: Int
        var lastChange = monotonicNanos()
        static let stallNanos: UInt64 = 3_000_000_000

        init(_ receiver: Receiver, _ expected: Int) {
            self.receiver = receiver
            self.expected = expected
            last = receiver.count.load(ordering: .acquiring)
        }

        /// The time the last event arrived, once done; nil while still waiting.
        mutating func check() -> UInt64? {
            let now = receiver.count.load(ordering: .acquiring)
            let t = monotonicNanos()
            if now >= expected { return t }
            if now != last {
                last = now
                lastChange = t
            } else if t - lastChange > Self.stallNanos {
                return lastChange
            }
            return nil
        }
    }
}

/// Where `Publisher` sends: an evbus peer, or a NATS client (a concrete type per run: no
/// closure or existential per message).
protocol BenchSink: Sendable {
    func send(_ payload: [UInt8]) async throws
    /// Returns once everything sent has reached the server.
    func finish() async throws
}

/// Publishes numbered, optionally time-stamped messages.
enum Publisher {
    /// Publishes `count` messages of `size` bytes (at least 16) as fast as the sink takes them,
    /// or paced at `pacedPerSecond`.
    static func run<Sink: BenchSink>(_ sink: Sink, count: Int, size: Int, stampEvery: Int = 64, pacedPerSecond: Int? = nil) async throws {
        var payload = [UInt8](repeating: 0x61, count: max(size, 16))
        let start = monotonicNanos()
        for i in 0..<count {
            if let rate = pacedPerSecond {
                let due = start + UInt64(i) * 1_000_000_000 / UInt64(rate)
                if rate <= 2_000 {
                    // Intervals of half a millisecond or more: sleeping is precise enough (the
                    // stamp is taken after it), and leaves the core to the system measured.
                    let now = monotonicNanos()
                    if due > now { try await Task.sleep(nanoseconds: due - now) }
                } else {
                    while monotonicNanos() < due { /* spin: sleeping is too coarse at these intervals */ }
                }
            }
            let stamp: UInt64 = i % stampEvery == 0 ? monotonicNanos() : 0
            payload.withUnsafeMutableBytes { p in
                p.storeBytes(of: UInt64(i), toByteOffset: 0, as: UInt64.self)
                p.storeBytes(of: stamp, toByteOffset: 8, as: UInt64.self)
            }
            try await sink.send(payload)
        }
        try await sink.finish()
    }

    /// An evbus peer publishing on a topic, or to an exchange with the topic as routing key.
    struct PeerSink: BenchSink {
        let peer: Peer
        let topic: String
        var exchange: String?
        var confirm = false

        func send(_ payload: [UInt8]) async throws {
            if let exchange {
                try await peer.publish(to: exchange, key: topic, payload, confirm: confirm)
            } else {
                try await peer.publish(topic, payload)
            }
        }

        func finish() async throws {
            if confirm { try await peer.waitForConfirms() }
            try await peer.flush()
        }
    }

    static func run(
        _ peer: Peer, topic: String, count: Int, size: Int, stampEvery: Int = 64, pacedPerSecond: Int? = nil,
        exchange: String? = nil, confirm: Bool = false
    ) async throws {
        try await run(PeerSink(peer: peer, topic: topic, exchange: exchange, confirm: confirm),
                      count: count, size: size, stampEvery: stampEvery, pacedPerSecond: pacedPerSecond)
    }
}
