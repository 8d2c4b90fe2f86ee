import Evbus
import EvbusIO
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

    /// Waits until `expected` events arrived, or nothing new came for `stallNanos`; returns when the last arrived.
    func waitFor(_ expected: Int, stallNanos: UInt64 = 3_000_000_000) async -> UInt64 {
        var last = count.load(ordering: .acquiring)
        var lastChange = monotonicNanos()
        while true {
            let now = count.load(ordering: .acquiring)
            let t = monotonicNanos()
            if now >= expected { return t }
            if now != last {
                last = now
                lastChange = t
            } else if t - lastChange > stallNanos {
                return lastChange
            }
            try? await Task.sleep(nanoseconds: 200_000)
        }
    }
}

/// Publishes numbered, optionally time-stamped messages.
enum Publisher {
    /// Publishes `count` messages of `size` bytes (at least 16) as fast as the peer takes them.
    static func run(_ peer: Peer, topic: String, count: Int, size: Int, stampEvery: Int = 64, pacedPerSecond: Int? = nil) async throws {
        var payload = [UInt8](repeating: 0x61, count: max(size, 16))
        let start = monotonicNanos()
        for i in 0..<count {
            if let rate = pacedPerSecond {
                let due = start + UInt64(i) * 1_000_000_000 / UInt64(rate)
                while monotonicNanos() < due { /* spin: sleeping is too coarse at these intervals */ }
            }
            let stamp: UInt64 = i % stampEvery == 0 ? monotonicNanos() : 0
            payload.withUnsafeMutableBytes { p in
                p.storeBytes(of: UInt64(i), toByteOffset: 0, as: UInt64.self)
                p.storeBytes(of: stamp, toByteOffset: 8, as: UInt64.self)
            }
            try await peer.publish(topic, payload)
        }
        try await peer.flush()
    }
}
