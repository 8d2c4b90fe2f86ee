import Evbus
import EvbusIO
import Foundation
import Synchronization

/// One benchmark result line.
struct BenchResult {
    var name: String
    var messages: Int
    var deliveries: Int
    var received: Int
    var nanos: UInt64
    var latencies: [UInt64] = []
    var outOfOrder = 0
    var extra: String = ""

    var lost: Int { deliveries - received }

    var line: String {
        var s = "\(name.padding(toLength: 30, withPad: " ", startingAt: 0)) "
        s += "msgs/s \(BenchReport.human(BenchReport.rate(messages, nanos: nanos)).padding(toLength: 9, withPad: " ", startingAt: 0)) "
        if deliveries != messages {
            s += "deliveries/s \(BenchReport.human(BenchReport.rate(received, nanos: nanos)).padding(toLength: 9, withPad: " ", startingAt: 0)) "
        }
        s += "sent \(messages) received \(received) lost \(lost)"
        if outOfOrder > 0 { s += " OUT-OF-ORDER \(outOfOrder)" }
        if !latencies.isEmpty {
            s += "  latency p50 \(BenchReport.micros(BenchReport.percentile(latencies, 50)))"
            s += " p99 \(BenchReport.micros(BenchReport.percentile(latencies, 99)))"
            s += " p99.9 \(BenchReport.micros(BenchReport.percentile(latencies, 99.9)))"
        }
        return s + extra
    }
}

enum Scenarios {
    /// 1 publisher -> `subscribers` subscribers on one topic; each peer on its own loop thread.
    /// Which subscriber API the benchmark uses.
    enum Delivery { case view, event }

    /// With `brokerPID`, also the broker's CPU time per published message (less at the mercy of
    /// the scheduler than msgs/s on a shared machine).
    static func pubsub(
        name: String, socket: String, messages: Int, size: Int, subscribers: Int, delivery: Delivery = .view, brokerPID: Int32? = nil
    ) async throws -> BenchResult {
        let pubLoop = try EventLoop.startThread(name: "bench-pub")
        let subLoop = try EventLoop.startThread(name: "bench-sub")
        defer {
            pubLoop.stopAndJoin()
            subLoop.stopAndJoin()
        }
        let topic = "bench.\(name)"
        var subs: [Peer] = []
        let receivers = (0..<subscribers).map { _ in Receiver() }
        for r in receivers {
            let peer = try await Peer.connect(to: socket, name: "bench-sub", loop: subLoop)
            switch delivery {
            case .view: _ = try await peer.subscribeViews(topic) { r.handle($0) }
            case .event: _ = try await peer.subscribe(topic, handler: { r.handle($0) })
            }
            subs.append(peer)
        }
        let publisher = try await Peer.connect(to: socket, name: "bench-pub", loop: pubLoop)
        let brokerCPU = brokerPID.map(RPCScenarios.processCPUNanos)
        let start = monotonicNanos()
        try await Publisher.run(publisher, topic: topic, count: messages, size: size)
        var end = start
        for r in receivers { end = max(end, await r.waitFor(messages)) }
        var extra = ""
        if let brokerPID, let brokerCPU {
            extra = "  broker CPU per message \((RPCScenarios.processCPUNanos(brokerPID) &- brokerCPU) / UInt64(messages)) ns"
        }
        let received = receivers.reduce(0) { $0 + $1.count.load(ordering: .acquiring) }
        var latencies = receivers.flatMap { $0.sortedLatencies() }
        latencies.sort()
        await publisher.close()
        for s in subs { await s.close() }
        return BenchResult(
            name: name, messages: messages, deliveries: messages * subscribers, received: received,
            nanos: end - start, latencies: latencies,
            outOfOrder: receivers.reduce(0) { $0 + $1.outOfOrder.load(ordering: .relaxed) }, extra: extra)
    }

    /// One-way latency at a modest fixed rate (every message stamped).
    static func latency(socket: String, messages: Int, rate: Int) async throws -> BenchResult {
        let pubLoop = try EventLoop.startThread(name: "bench-pub")
        let subLoop = try EventLoop.startThread(name: "bench-sub")
        defer {
            pubLoop.stopAndJoin()
            subLoop.stopAndJoin()
        }
        let receiver = Receiver()
        let sub = try await Peer.connect(to: socket, name: "bench-sub", loop: subLoop)
        _ = try await sub.subscribe("bench.latency") { receiver.handle($0) }
        let publisher = try await Peer.connect(to: socket, name: "bench-pub", loop: pubLoop)
        let start = monotonicNanos()
        try await Publisher.run(publisher, topic: "bench.latency", count: messages, size: 16, stampEvery: 1, pacedPerSecond: rate)
        let end = await receiver.waitFor(messages)
        await publisher.close()
        await sub.close()
        return BenchResult(
            name: "latency@\(rate / 1000)k", messages: messages, deliveries: messages,
            received: receiver.count.load(ordering: .acquiring), nanos: end - start, latencies: receiver.sortedLatencies())
    }
}
