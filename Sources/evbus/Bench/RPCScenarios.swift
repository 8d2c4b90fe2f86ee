import Evbus
import EvbusIO
import Foundation
import Synchronization

/// Request/reply: sequential round trips from one client (latency), and 8 clients at once (throughput).
enum RPCScenarios {
    /// One responder peer echoing 16-byte requests; `clients` client peers, each doing sequential
    /// round trips, `calls` in all. Each peer has its own event loop.
    /// Also prints the CPU time each party spent per round trip (client loop, responder loop, broker
    /// process): steadier than the wall-clock figures on a shared machine, and what a change to the
    /// request path moves first.
    /// `clientPolling` is the client loop's `idleSpin` (zero: it sleeps in `epoll_wait` at once).
    static func roundTrips(
        name: String, socket: String, calls: Int, clients: Int, clientPolling: Duration = .zero, brokerPID: Int32
    ) async throws -> String {
        let serverLoop = try EventLoop.startThread(name: "bench-responder")
        let clientLoop = try EventLoop.startThread(name: "bench-client")
        clientLoop.idleSpin = clientPolling
        defer {
            serverLoop.stopAndJoin()
            clientLoop.stopAndJoin()
        }
        let queue = "bench.\(name)"
        let server = try await Peer.connect(to: socket, name: "bench-responder", loop: serverLoop)
        let responder = try await server.respond(on: queue, prefetch: 64) { (request: Request) -> [UInt8] in request.payload }
        var peers: [Peer] = []
        for _ in 0..<clients { peers.append(try await Peer.connect(to: socket, name: "bench-client", loop: clientLoop)) }
        let payload = [UInt8](repeating: 0x61, count: 16)
        // Warm up: routes cached, buffers grown, threads awake.
        for p in peers { for _ in 0..<200 { _ = try await p.request(to: .queue(queue), payload) } }
        let perClient = calls / clients
        let clientCPU = try await clientLoop.submit { ControllerScenarios.threadCPUNanos() }
        let serverCPU = try await serverLoop.submit { ControllerScenarios.threadCPUNanos() }
        let brokerCPU = processCPUNanos(brokerPID)
        let start = monotonicNanos()
        let latencies = try await withThrowingTaskGroup(of: [UInt64].self) { group in
            for p in peers {
                group.addTask(executorPreference: p.executor) {
                    var mine: [UInt64] = []
                    mine.reserveCapacity(perClient)
                    for _ in 0..<perClient {
                        let t0 = monotonicNanos()
                        _ = try await p.request(to: .queue(queue), payload)
                        mine.append(monotonicNanos() - t0)
                    }
                    return mine
                }
            }
            return try await group.reduce(into: [UInt64]()) { $0 += $1 }.sorted()
        }
        let elapsed = monotonicNanos() - start
        let n = UInt64(latencies.count)
        let cpu = (
            client: (try await clientLoop.submit { ControllerScenarios.threadCPUNanos() } - clientCPU) / n,
            server: (try await serverLoop.submit { ControllerScenarios.threadCPUNanos() } - serverCPU) / n,
            broker: (processCPUNanos(brokerPID) &- brokerCPU) / n)
        try await responder.cancel()
        for p in peers { await p.close() }
        await server.close()
        return BenchReport.roundTripLine(name, latencies, nanos: elapsed, clients: clients)
            + "  CPU per round trip: client \(BenchReport.micros(cpu.client)) responder \(BenchReport.micros(cpu.server)) broker \(BenchReport.micros(cpu.broker))"
    }

    /// CPU time (user and system) used so far by all threads of a process, from each thread's
    /// `/proc/PID/task/TID/schedstat` (nanoseconds, unlike `stat`'s clock ticks).
    static func processCPUNanos(_ pid: Int32) -> UInt64 {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        var total: UInt64 = 0
        for tid in tasks {
            guard let text = try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/schedstat", encoding: .utf8),
                let first = text.split(separator: " ").first, let nanos = UInt64(first)
            else { continue }
            total += nanos
        }
        return total
    }
}
