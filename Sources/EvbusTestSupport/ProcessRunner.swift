import Foundation
import Synchronization

/// A child process with its output captured: the real `evbus` binary in end-to-end tests.
public final class RunningProcess: Sendable {
    let process: Process
    private let stdoutBuffer = Mutex<[UInt8]>([])
    private let stderrBuffer = Mutex<[UInt8]>([])
    private let stdinPipe: Pipe
    /// Output pipes read to their end (both, once the child and anything it spawned have exited).
    private let pipesDrained = Atomic<Int>(0)

    /// Starts `executable` with `arguments` and extra `environment` entries.
    public init(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let out = Pipe(), err = Pipe(), input = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = input
        stdinPipe = input
        self.process = process
        try process.run()
        // One reading thread per pipe, with plain blocking reads. Not `readabilityHandler`: tearing
        // down its dispatch read source races libdispatch's epoll loop on Linux and intermittently
        // crashes the whole test process in `_dispatch_event_loop_drain` (a known Foundation bug,
        // swift-corelibs-foundation#5507).
        let (outHandle, errHandle) = (out.fileHandleForReading, err.fileHandleForReading)
        Thread.detachNewThread { [self] in readToEnd(outHandle, stdout: true) }
        Thread.detachNewThread { [self] in readToEnd(errHandle, stdout: false) }
    }

    /// Appends everything `handle` delivers to the stdout or stderr buffer, until end of file.
    private func readToEnd(_ handle: FileHandle, stdout: Bool) {
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(handle.fileDescriptor, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            if stdout {
                stdoutBuffer.withLock { $0.append(contentsOf: chunk[..<n]) }
            } else {
                stderrBuffer.withLock { $0.append(contentsOf: chunk[..<n]) }
            }
        }
        pipesDrained.add(1, ordering: .releasing)
    }

    /// Runs `evbus` with `arguments`.
    public static func evbus(_ arguments: [String], environment: [String: String] = [:]) throws -> RunningProcess {
        try RunningProcess(TestPaths.evbusBinary, arguments, environment: environment)
    }

    public var stdout: String { stdoutBuffer.withLock { String(decoding: $0, as: UTF8.self) } }
    public var stderr: String { stderrBuffer.withLock { String(decoding: $0, as: UTF8.self) } }
    public var stdoutLines: [String] { stdout.split(separator: "\n", omittingEmptySubsequences: true).map(String.init) }
    public var isRunning: Bool { process.isRunning }
    public var pid: Int32 { process.processIdentifier }

    public func writeStdin(_ text: String) { stdinPipe.fileHandleForWriting.write(Data(text.utf8)) }
    public func closeStdin() { try? stdinPipe.fileHandleForWriting.close() }

    public func signal(_ sig: Int32) { kill(process.processIdentifier, sig) }

    /// Waits for exit (up to `seconds`, then SIGKILL) and returns the exit status.
    @discardableResult
    public func waitForExit(seconds: Double = 30) async -> Int32 {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { try? await Task.sleep(nanoseconds: 10_000_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        // Let the reading threads take what the child wrote last (bounded: a grandchild that
        // inherited the pipes could keep them open).
        let drainDeadline = Date().addingTimeInterval(5)
        while pipesDrained.load(ordering: .acquiring) < 2 && Date() < drainDeadline {
            try? await Task.sleep(nanoseconds: 2_000_000)
        }
        return process.terminationStatus
    }

    /// Runs `evbus` to completion: (status, stdout, stderr).
    public static func runEvbus(_ arguments: [String], stdin: String? = nil, environment: [String: String] = [:], seconds: Double = 30)
        async throws -> (status: Int32, stdout: String, stderr: String)
    {
        let p = try evbus(arguments, environment: environment)
        if let stdin { p.writeStdin(stdin) }
        p.closeStdin()
        let status = await p.waitForExit(seconds: seconds)
        return (status, p.stdout, p.stderr)
    }
}

