import CEvbusLinux
import Glibc

/// Starts one worker process: `executable` with `arguments`, its end of a new socket pair as
/// descriptor 3 (named by `EVBUS_POOL_WORKER_FD`), and no other descriptor of this process.
/// Returns its pid and this side's end (non-blocking, close-on-exec).
enum WorkerProcess {
    static func spawn(executable: String, arguments: [String]) throws(ControllerError) -> (pid: pid_t, fd: Int32) {
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | CEvbus_SOCK_CLOEXEC, 0, &fds) == 0 else {
            throw ControllerError(.socketFailed, "socketpair failed: \(String(cString: strerror(errno)))")
        }
        let (mine, theirs) = (fds[0], fds[1])
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, theirs, 3)  // dup2 clears close-on-exec
        CEvbus_spawn_closefrom(&actions, 4)
        var environment: [String] = []
        var entry = environ
        while let e = entry.pointee {
            let text = String(cString: e)
            if !text.hasPrefix("\(poolWorkerVariable)=") { environment.append(text) }
            entry += 1
        }
        environment.append("\(poolWorkerVariable)=3")
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer { for p in argv + envp { free(p) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, nil, argv, envp)
        close(theirs)
        guard result == 0 else {
            close(mine)
            throw ControllerError(.socketFailed, "cannot start the worker \(executable): \(String(cString: strerror(result)))")
        }
        _ = fcntl(mine, F_SETFL, fcntl(mine, F_GETFL) | O_NONBLOCK)
        return (pid, mine)
    }

    /// This program's own executable (for a pool of itself).
    static var ownExecutable: String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        return n > 0 ? String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
    }

    /// Kills a worker (if it still runs) and collects its exit; says how it ended.
    static func reap(_ pid: pid_t) -> String {
        kill(pid, SIGKILL)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let signal = status & 0x7F
        if signal == 0 { return "exited with status \((status >> 8) & 0xFF)" }
        return "was killed by signal \(signal)"
    }
}
