import CEvbusLinux
import Foundation
import Synchronization

/// A child process with its output captured: the real `evbus` binary in end-to-end tests.
///
/// Started with `posix_spawn`, not Foundation's `Process`: with many children started at once
/// from several threads, `Process.run()` crashed the whole test process inside a `memcpy`
/// (once in ~20 rounds of the access-control suite under load). The pipes are made close-on-exec,
/// so a child started at the same moment by another thread never inherits this one's, and each
/// child closes every descriptor but its three standard ones, as `Process` does.
public final class RunningProcess: Sendable {
    public let pid: Int32
    /// What the child wrote. Its reading threads hold this, not the process object, so that
    /// dropping a `RunningProcess` runs its deinit (which kills a child still running) instead of
    /// the threads keeping it, and its child, alive until the child exits by itself.
    private let output = CapturedOutput()
    /// The write end of the child's stdin; -1 once closed.
    private let stdinFD: Mutex<Int32>
    /// The exit status once reaped (`waitpid`), nil while it runs.
    private let reaped = Mutex<Int32?>(nil)
    /// Output pipes read to their end (both, once the child and anything it spawned have exited).

    /// Starts `executable` with `arguments` and extra `environment` entries; `passing` descriptors
    /// become the child's 3, 4, ... (as systemd passes listening sockets).
    public init(_ executable: String, _ arguments: [String], environment: [String: String] = [:], passing: [Int32] = []) throws {
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        var input: [Int32] = [0, 0], output: [Int32] = [0, 0], errors: [Int32] = [0, 0]
        guard CEvbus_pipe_cloexec(&input) == 0, CEvbus_pipe_cloexec(&output) == 0, CEvbus_pipe_cloexec(&errors) == 0 else {
            throw TestSupportError("pipe: \(String(cString: strerror(errno)))")
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, input[0], 0)
        posix_spawn_file_actions_adddup2(&actions, output[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errors[1], 2)
        // Nothing else: a descriptor another thread opened without O_CLOEXEC (FileManager copying
        // a file, say) must not live on in a child (it kept a copied binary "busy" for exec).
        for (i, fd) in passing.enumerated() { posix_spawn_file_actions_adddup2(&actions, fd, Int32(3 + i)) }
        CEvbus_spawn_closefrom(&actions, Int32(3 + passing.count))
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for p in argv + envp { free(p) } }
        var child: pid_t = 0
        let result = posix_spawn(&child, executable, &actions, nil, argv, envp)
        close(input[0])
        close(output[1])
        close(errors[1])
        guard result == 0 else {
            for fd in [input[1], output[0], errors[0]] { close(fd) }
            throw TestSupportError("cannot start \(executable): \(String(cString: strerror(result)))")
        }
        pid = child
        stdinFD = Mutex(input[1])
        // One reading thread per pipe, with plain blocking reads. Not `readabilityHandler`: tearing
        // down its dispatch read source races libdispatch's epoll loop on Linux and intermittently
        // crashes the whole test process in `_dispatch_event_loop_drain` (a known Foundation bug,
        // swift-corelibs-foundation#5507).
        let (outFD, errFD) = (output[0], errors[0])
        let captured = self.output
        Thread.detachNewThread { captured.readToEnd(outFD, stdout: true) }
        Thread.detachNewThread { captured.readToEnd(errFD, stdout: false) }
    }

    deinit {
        closeStdin()
        if reaped.withLock({ $0 }) == nil {
            kill(pid, SIGKILL)
            _ = exitStatus(blocking: true)
        }
    }

    /// The exit status if the child has exited (reaping it), nil while it runs. A signal's
    /// number stands for a child killed by it, as Foundation's `terminationStatus` has it.
    private func exitStatus(blocking: Bool) -> Int32? {
        reaped.withLock { known in
            if let known { return known }
            var status: Int32 = 0
            while true {
                let r = waitpid(pid, &status, blocking ? 0 : WNOHANG)
                if r == -1 && errno == EINTR { continue }
                guard r == pid else { return nil }
                break
            }
            let code = status & 0x7f == 0 ? (status >> 8) & 0xff : status & 0x7f
            known = code
            return code
        }
    }

    /// Runs `evbus` with `arguments`.
    public static func evbus(_ arguments: [String], environment: [String: String] = [:]) throws -> RunningProcess {
        try RunningProcess(TestPaths.evbusBinary, arguments, environment: environment)
    }

    public var stdout: String { output.stdout.withLock { String(decoding: $0, as: UTF8.self) } }
    public var stderr: String { output.stderr.withLock { String(decoding: $0, as: UTF8.self) } }
    public var stdoutLines: [String] { stdout.split(separator: "\n", omittingEmptySubsequences: true).map(String.init) }
    public var isRunning: Bool { exitStatus(blocking: false) == nil }

    public func writeStdin(_ text: String) {
        stdinFD.withLock { fd in
            guard fd >= 0 else { return }
            var bytes = Array(text.utf8)[...]
            while !bytes.isEmpty {
                let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return }
                bytes = bytes.dropFirst(n)
            }
        }
    }

    public func closeStdin() {
        stdinFD.withLock { fd in
            if fd >= 0 { close(fd) }
            fd = -1
        }
    }

    public func signal(_ sig: Int32) {
        if isRunning { kill(pid, sig) }
    }

    /// SIGSTOP, then waits until every thread of the process is stopped: `kill` returns before a
    /// thread running on another CPU has stopped, and in that moment it may still handle a frame.
    /// False if it did not stop (it exited, or not within 10 s).
    public func stopAndWaitUntilStopped() async -> Bool {
        signal(SIGSTOP)
        return await eventually(10) { self.allThreadsStopped() }
    }

    private func allThreadsStopped() -> Bool {
        guard let threads = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task"), !threads.isEmpty else { return false }
        return threads.allSatisfy { tid in
            // The state is the field after the parenthesised name: "T" stopped.
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return false }
            return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first == "T"
        }
    }

    /// Waits for exit (up to `seconds`, then SIGKILL) and returns the exit status.
    @discardableResult
    public func waitForExit(seconds: Double = 30) async -> Int32 {
        let deadline = Date().addingTimeInterval(seconds)
        while isRunning && Date() < deadline { try? await Task.sleep(nanoseconds: 10_000_000) }
        if isRunning { kill(pid, SIGKILL) }
        let status = exitStatus(blocking: true) ?? -1
        // Let the reading threads take what the child wrote last (bounded: a grandchild that
        // inherited the pipes could keep them open).
        let drainDeadline = Date().addingTimeInterval(5)
        while output.pipesDrained.load(ordering: .acquiring) < 2 && Date() < drainDeadline {
            try? await Task.sleep(nanoseconds: 2_000_000)
        }
        return status
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


/// A child's standard output and error as they arrive, and how many of the two pipes have ended.
final class CapturedOutput: Sendable {
    let stdout = Mutex<[UInt8]>([])
    let stderr = Mutex<[UInt8]>([])
    let pipesDrained = Atomic<Int>(0)

    /// Appends everything `fd` delivers to stdout or stderr, until end of file.
    func readToEnd(_ fd: Int32, stdout isStdout: Bool) {
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            if isStdout {
                stdout.withLock { $0.append(contentsOf: chunk[..<n]) }
            } else {
                stderr.withLock { $0.append(contentsOf: chunk[..<n]) }
            }
        }
        close(fd)
        pipesDrained.add(1, ordering: .releasing)
    }
}
