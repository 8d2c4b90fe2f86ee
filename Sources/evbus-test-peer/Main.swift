import Evbus
import Glibc

/// Peers the end-to-end tests need as separate processes, doing what no shipped command does:
///
///     evbus-test-peer blocking-responder <socket> <queue> <marker-file>
///         Serves <queue> with a plain (non-async) handler that creates <marker-file>, then never
///         returns: a responder caught mid-request, to be killed there.
///     evbus-test-peer pool-demo <workers> <n>...
///         Starts a process pool of this same program and prints fib(n) for each n, one per line.
///
/// Started by a process pool (EVBUS_POOL_WORKER_FD set), it is a pool worker with the handlers
/// below, whatever its arguments.
@main
struct TestPeer {
    static func main() async throws {
        ProcessPool.runWorkerIfAsked(workerHandlers())
        let args = Array(CommandLine.arguments.dropFirst())
        switch args.first {
        case "blocking-responder" where args.count == 4:
            try await blockingResponder(socket: args[1], queue: args[2], marker: args[3])
        case "pool-demo" where args.count >= 3:
            try await poolDemo(workers: Int(args[1]) ?? 1, inputs: args.dropFirst(2).compactMap { Int($0) })
        default:
            let usage = "usage: evbus-test-peer blocking-responder <socket> <queue> <marker-file> | pool-demo <workers> <n>...\n"
            _ = write(2, usage, usage.utf8.count)
            exit(64)
        }
    }

    static func blockingResponder(socket: String, queue: String, marker: String) async throws {
        let peer = try await Peer.connect(to: socket, name: "blocking-responder")
        _ = try await peer.respond(on: queue, prefetch: 1) { (_: Request) throws -> [UInt8] in
            close(open(marker, O_CREAT | O_WRONLY, 0o644))
            while true { pause() }  // blocks the peer's loop thread: nothing more is written
        }
        while true { try await Task.sleep(for: .seconds(3600)) }
    }

    static func poolDemo(workers: Int, inputs: [Int]) async throws {
        let pool = try ProcessPool(name: "demo", workers: workers)
        for n in inputs {
            let result = try await pool.dispatch("fib", n, as: Int.self).value
            print("fib(\(n)) = \(result)")
        }
        pool.shutdown()
        await pool.stopped()
    }
}

struct Shape: Codable, Sendable, Equatable {
    var name: String
    var corners: [Int]
    var note: String?
}

/// The pool workers' handlers (docs/CONTROLLER.md, "Worker processes").
func workerHandlers() -> WorkerBlueprint {
    var workers = WorkerBlueprint()
    workers.on("fib") { (n: Int) -> Int in
        @Sendable func fib(_ n: Int) -> Int { n < 2 ? n : fib(n - 1) + fib(n - 2) }
        return fib(n)
    }
    workers.on("pid") { (_: Int) in Int(getpid()) }
    workers.on("describe") { (shape: Shape) in "\(shape.name) with \(shape.corners.count) corners" }
    workers.on("grow") { (shape: Shape) in Shape(name: shape.name + "+", corners: shape.corners + [0], note: nil) }
    workers.on("fail") { (why: String) -> Int in throw WorkerFailure(why: why) }
    workers.on("crash") { (code: Int32) -> Int in exit(code) }
    workers.on("hang") { (_: Int) -> Int in
        while true { pause() }
    }
    return workers
}

struct WorkerFailure: Error, CustomStringConvertible {
    var why: String
    var description: String { "refused: \(why)" }
}
