import EvbusIO
import Foundation
import Synchronization

/// A real `evbus broker` child process on a temporary socket, for the benchmark.
final class BenchBroker {
    let process = Process()
    let socketPath: String
    let directory: String

    private static let started = Atomic<Int>(0)

    /// `accessRules`: start it with an `access` section granting this user what the scenarios do,
    /// on the names they use (`bench.#` topics, not `#`), so every check really runs.
    init(extraArguments: [String] = [], accessRules: Bool = false) throws {
        directory = NSTemporaryDirectory() + "evbus-bench-\(getpid())-\(Self.started.add(1, ordering: .relaxed).oldValue)"
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        socketPath = directory + "/b.sock"
        var arguments = extraArguments
        if accessRules {
            let config = directory + "/access.json"
            try """
                {"access": [{"uid": \(getuid()), "publish": ["bench.#"], "subscribe": ["bench.#", "idle.#", "burst.#"],
                  "publishTo": {"#": ["#"]}, "configure": ["#"], "consume": ["#"], "request": ["#"], "respond": ["#"]}]}
                """.write(toFile: config, atomically: true, encoding: .utf8)
            arguments += ["--config", config]
        }
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        process.arguments = ["broker", "--socket", socketPath, "--data-dir", directory + "/data", "--log-level", "warning"] + arguments
        try process.run()
        let deadline = monotonicNanos() + 10_000_000_000
        while !UnixSocket.isLive(path: socketPath) {
            guard process.isRunning, monotonicNanos() < deadline else {
                throw BenchError("the benchmark broker did not start")
            }
            usleep(10_000)
        }
    }

    var pid: Int32 { process.processIdentifier }

    /// Resident memory of the broker process, in bytes.
    var residentBytes: Int { Self.residentBytes(pid: pid) }

    static func residentBytes(pid: Int32) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let digits = line.split(separator: " ").dropFirst().first ?? "0"
            return (Int(digits) ?? 0) * 1024
        }
        return 0
    }

    func stop() {
        process.terminate()
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}
