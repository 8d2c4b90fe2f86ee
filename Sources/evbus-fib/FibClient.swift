import Evbus
import Foundation
import Synchronization

/// `evbus-fib client N`: one call prints `fib(N) = RESULT`; with --count, a latency summary.
enum FibClient {
    static func run(socket: String?, queue: String, n: String, count: Int?, concurrency: Int, timeout: Duration) async throws -> Int32 {
        let peer = try await Peer.connect(to: socket, name: "evbus-fib client")
        guard let count else {
            do {
                let reply = try await peer.request(to: .queue(queue), n, timeout: timeout)
                print("fib(\(n)) = \(reply.text)")
                await peer.close()
                return 0
            } catch let error as EvbusError {
                FileHandle.standardError.write(Data("Error: \(describe(error))\n".utf8))
                await peer.close()
                return 1
            }
        }
        let progress = Progress()
        let start = ContinuousClock.now
        let latencies = try await withThrowingTaskGroup(of: [Duration].self) { group in
            for _ in 0..<concurrency {
                group.addTask {
                    var mine: [Duration] = []
                    while progress.take() < count {
                        let t0 = ContinuousClock.now
                        do {
                            _ = try await peer.request(to: .queue(queue), n, timeout: timeout)
                            mine.append(ContinuousClock.now - t0)
                        } catch let error as EvbusError {
                            progress.fail(describe(error))
                        }
                    }
                    return mine
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }.sorted()
        }
        let elapsed = ContinuousClock.now - start
        let failed = progress.failures
        if !latencies.isEmpty {
            func micros(_ p: Double) -> Int {
                let d = latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))]
                return Int(d.components.seconds * 1_000_000 + d.components.attoseconds / 1_000_000_000_000)
            }
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            print("fib(\(n)) x \(latencies.count), concurrency \(concurrency): p50 \(micros(0.5)) µs, p99 \(micros(0.99)) µs, \(Int(Double(latencies.count) / seconds)) calls/s")
        }
        if let first = failed.first {
            FileHandle.standardError.write(Data("Error: \(failed.count) calls failed; first: \(first)\n".utf8))
            await peer.close()
            return 1
        }
        await peer.close()
        return 0
    }

    /// Calls handed out and calls failed, shared by the concurrent callers.
    final class Progress: Sendable {
        private let state = Mutex<(next: Int, failures: [String])>((0, []))
        func take() -> Int { state.withLock { s in defer { s.next += 1 }; return s.next } }
        func fail(_ why: String) { state.withLock { $0.failures.append(why) } }
        var failures: [String] { state.withLock { $0.failures } }
    }

    static func describe(_ e: EvbusError) -> String {
        e.code == .remote ? "the server refused (\(e.remoteCode ?? "error")): \(e.message)" : e.message
    }
}
