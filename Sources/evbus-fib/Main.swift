import Foundation
import Synchronization

/// The RabbitMQ RPC tutorial on evbus, in three terminals:
///   evbus broker
///   evbus-fib server --workers 2
///   evbus-fib client 30
@main
struct FibMain {
    static let usage = """
        USAGE: evbus-fib server [--workers <n>] [--queue <name>] [--socket <path>]
               evbus-fib client <n> [--count <k>] [--concurrency <c>] [--queue <name>] [--timeout <ms>] [--socket <path>]
        """

    static func main() async {
        var args = Array(CommandLine.arguments.dropFirst())
        guard let command = args.first else { fail("Missing subcommand (server or client)") }
        args.removeFirst()
        if args.contains("--help") || args.contains("-h") || command == "--help" || command == "-h" {
            print(usage)
            exit(0)
        }
        var options: [String: String] = [:]
        var positionals: [String] = []
        var i = 0
        let known = ["--workers", "--queue", "--socket", "--count", "--concurrency", "--timeout"]
        while i < args.count {
            let a = args[i]
            if a.hasPrefix("--") {
                guard known.contains(a) else { fail("Unknown option '\(a)'") }
                guard i + 1 < args.count else { fail("Missing value for '\(a)'") }
                options[a] = args[i + 1]
                i += 2
            } else {
                positionals.append(a)
                i += 1
            }
        }
        let queue = options["--queue"] ?? "rpc_queue"
        let socket = options["--socket"]
        do {
            switch command {
            case "server":
                guard positionals.isEmpty else { fail("Unexpected argument '\(positionals[0])'") }
                let workers = int(options["--workers"], "--workers", 1...256) ?? max(1, ProcessInfo.processInfo.activeProcessorCount)
                exit(try await FibServer.run(socket: socket, queue: queue, workers: workers))
            case "client":
                guard positionals.count == 1 else { fail(positionals.isEmpty ? "Missing expected argument '<n>'" : "Unexpected argument '\(positionals[1])'") }
                let count = int(options["--count"], "--count", 1...10_000_000)
                let concurrency = int(options["--concurrency"], "--concurrency", 1...10_000) ?? 1
                let timeout = int(options["--timeout"], "--timeout", 1...86_400_000) ?? 30_000
                exit(try await FibClient.run(
                    socket: socket, queue: queue, n: positionals[0], count: count, concurrency: concurrency,
                    timeout: .milliseconds(timeout)))
            default:
                fail("Unknown subcommand '\(command)' (server or client)")
            }
        } catch {
            FileHandle.standardError.write(Data("Error: \(error)\n".utf8))
            exit(1)
        }
    }

    static func int(_ raw: String?, _ name: String, _ range: ClosedRange<Int>) -> Int? {
        guard let raw else { return nil }
        guard let n = Int(raw), range.contains(n) else { fail("The value '\(raw)' is invalid for '\(name)': expected \(range.lowerBound)...\(range.upperBound)") }
        return n
    }

    static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("Error: \(message)\n\(usage)\n".utf8))
        exit(64)
    }
}

/// Suspends until SIGINT or SIGTERM.
enum Signals {
    static func waitForTermination() async {
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        let queue = DispatchQueue(label: "evbus-fib.signals")
        let fired = Gate()
        let sources = [SIGINT, SIGTERM].map { number in
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { fired.open() }
            source.resume()
            return source
        }
        await fired.wait()
        withExtendedLifetime(sources) {}
    }
}

/// Opens once; `wait` returns when open (whether it opened before or after).
final class Gate: Sendable {
    private let state = Mutex<(open: Bool, waiter: CheckedContinuation<Void, Never>?)>((false, nil))

    func open() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.open = true
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume()
    }

    func wait() async {
        await withCheckedContinuation { c in
            let already = state.withLock { s -> Bool in
                if !s.open { s.waiter = c }
                return s.open
            }
            if already { c.resume() }
        }
    }
}
