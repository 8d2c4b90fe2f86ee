import Evbus
import EvbusIO
import EvbusWire
import Foundation
import Synchronization

/// Publish-to-confirm latency: the send time of every 64th publish, matched with the confirm that
/// covers it (confirms may be `multiple`). Shared by the evbus and RabbitMQ producers.
final class ConfirmClock: Sendable {
    private struct State {
        var sent: [(sequence: UInt64, at: UInt64)] = []
        var next = 0
        var latencies: [UInt64] = []
    }
    private let state = Mutex(State())
    let confirmed = Atomic<UInt64>(0)
    let nacked = Atomic<Int>(0)

    func sent(_ sequence: UInt64) {
        guard sequence % 64 == 0 else { return }
        let now = monotonicNanos()
        state.withLock { $0.sent.append((sequence, now)) }
    }

    /// Everything up to `sequence` is answered.
    func confirmed(through sequence: UInt64, nack: Bool) {
        let now = monotonicNanos()
        if nack { nacked.add(1, ordering: .relaxed) }
        state.withLock { s in
            while s.next < s.sent.count && s.sent[s.next].sequence <= sequence {
                s.latencies.append(now - s.sent[s.next].at)
                s.next += 1
            }
        }
        confirmed.store(max(confirmed.load(ordering: .relaxed), sequence), ordering: .releasing)
    }

    var sortedLatencies: [UInt64] { state.withLock { $0.latencies.sorted() } }

    /// Waits (spinning gently) until fewer than `window` publishes are unanswered.
    func waitForWindow(sent: UInt64, window: UInt64) {
        while sent > confirmed.load(ordering: .acquiring) + window { usleep(20) }
    }
}

/// Durable work queues: a producer publishing persistent 16-byte messages with confirms into a
/// durable queue (`sync always`), 1 or 4 consumers acking each message, prefetch 100.
enum DurableScenarios {
    /// Unconfirmed publishes a producer keeps in flight (as RabbitMQ PerfTest's `--confirm`).
    static let window: UInt64 = 10_000

    static func workQueue(name: String, socket: String, messages: Int, consumers: Int) async throws -> BenchResult {
        let subLoop = try EventLoop.startThread(name: "bench-sub")
        defer { subLoop.stopAndJoin() }
        let queue = "bench.\(name)"
        let admin = try await Peer.connect(to: socket, name: "bench-admin")
        _ = try await admin.declareQueue(queue, QueueOptions(durable: true))
        try await admin.purgeQueue(queue)
        let acked = Receiver()
        var peers: [Peer] = []
        for _ in 0..<consumers {
            let peer = try await Peer.connect(to: socket, name: "bench-worker", loop: subLoop)
            _ = try await peer.consumeViews(queue, ack: .manual, prefetch: 100) { view in
                try? peer.ack(view.deliveryTag)
                acked.count.add(1, ordering: .releasing)
            }
            peers.append(peer)
        }
        let before = try await admin.brokerStats()
        let clock = ConfirmClock()
        let start = monotonicNanos()
        let producer = try RawSocket(address: socket)
        try await runOffPool { try Self.produce(producer, queue: queue, count: messages, clock: clock) }
        let end = await acked.waitFor(messages)
        let after = try await admin.brokerStats()
        func delta(_ name: String) -> UInt64 {
            (after.first { $0.name == name }?.value ?? 0) - (before.first { $0.name == name }?.value ?? 0)
        }
        let seconds = Double(end - start) / 1e9
        let syncs = delta("store_syncs")
        let summary = try await admin.topology().queues.first { $0.name == queue }
        try await admin.deleteQueue(queue)
        await admin.close()
        for p in peers { await p.close() }
        let extra = "  syncs/s \(BenchReport.human(Double(syncs) / seconds)) msgs/sync \(syncs == 0 ? "-" : BenchReport.format(Double(delta("store_persisted")) / Double(syncs), 1))"
            + " paged \(delta("store_paged_out"))"
            + "  (broker: acked \(summary?.acked ?? 0); prefetch 100, persistent, confirms, window \(window)\(clock.nacked.load(ordering: .relaxed) > 0 ? ", NACKS" : ""))"
        return BenchResult(
            name: name, messages: messages, deliveries: messages, received: acked.count.load(ordering: .acquiring),
            nanos: end - start, latencies: clock.sortedLatencies, extra: extra)
    }

    /// Runs a blocking body on a thread of its own, so the benchmark's tasks keep their threads.
    static func runOffPool(_ body: @escaping @Sendable () throws -> Void) async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            Thread.detachNewThread {
                do {
                    try body()
                    c.resume()
                } catch {
                    c.resume(throwing: error)
                }
            }
        }
    }

    /// A raw evbus producer (blocking socket): PUBLISH_TO with confirm and the persistent property,
    /// written in batches, with a reader thread matching CONFIRMs to send times.
    static func produce(_ socket: RawSocket, queue: String, count: Int, clock: ConfirmClock) throws {
        socket.write(WireFormat.preamble + Frame.hello(clientName: "bench-producer").encoded())
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var pending: [UInt8] = []
        // WELCOME first.
        while true {
            let n = buffer.withUnsafeMutableBytes { socket.read(into: $0, from: 0) }
            guard n > 0 else { throw BenchError("the broker closed the producer's connection") }
            pending += buffer[0..<n]
            if pending.count >= 5, pending.count >= 4 + Int(UInt32(littleEndian: pending.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) })) { break }
        }
        let reader = Thread {
            var data = [UInt8]()
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            while clock.confirmed.load(ordering: .acquiring) < UInt64(count) {
                let n = chunk.withUnsafeMutableBytes { socket.read(into: $0, from: 0) }
                guard n > 0 else { return }
                data += chunk[0..<n]
                var offset = 0
                while data.count - offset >= 4 {
                    let length = Int(UInt32(littleEndian: data.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self) }))
                    guard data.count - offset >= 4 + length else { break }
                    if data[offset + 4] == FrameType.confirm.rawValue {
                        let sequence = data.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: offset + 5, as: UInt64.self)) }
                        clock.confirmed(through: sequence, nack: data[offset + 13] & AckFlag.nack != 0)
                    }
                    offset += 4 + length
                }
                data.removeFirst(offset)
            }
        }
        reader.start()
        let properties: [UInt8] = [MessageProperties.Flag.persistent]
        var payload = [UInt8](repeating: 0x61, count: 16)
        let frameSize = PublishToEncoder.size(exchangeCount: 0, keyCount: queue.utf8.count, propertiesCount: 1, payloadCount: 16)
        var batch = [UInt8](repeating: 0, count: 256 * frameSize)
        var inBatch = 0
        var key = queue
        for i in 1...count {
            payload.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(i), as: UInt64.self) }
            batch.withUnsafeMutableBytes { b in
                key.withUTF8 { k in
                    properties.withUnsafeBytes { pr in
                        payload.withUnsafeBytes { pl in
                            PublishToEncoder.write(
                                into: b.baseAddress! + inBatch * frameSize, flags: PublishFlag.confirm,
                                exchange: UnsafeRawBufferPointer(start: nil, count: 0), routingKey: UnsafeRawBufferPointer(k),
                                properties: pr, payload: pl)
                        }
                    }
                }
            }
            inBatch += 1
            clock.sent(UInt64(i))
            if inBatch == 256 || i == count {
                batch.withUnsafeBytes { socket.write(UnsafeRawBufferPointer(rebasing: $0[0..<(inBatch * frameSize)])) }
                inBatch = 0
                clock.waitForWindow(sent: UInt64(i), window: window)
            }
        }
        while clock.confirmed.load(ordering: .acquiring) < UInt64(count) { usleep(100) }
    }
}
