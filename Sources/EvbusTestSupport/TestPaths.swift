import Foundation
import Synchronization

/// Short, unique paths (Unix sockets allow 107 bytes) for what a test makes on disk. They all
/// sit in one directory per test process, so a run leaves nothing behind in /tmp: the directory
/// goes when the process exits, and one left by a test process that died (a crash, a SIGKILL) goes
/// when the next test process starts.
public enum TestPaths {
    private static let counter = Atomic<Int>(0)

    /// `/tmp/evbt-<pid>`, made on first use with /tmp's own mode (1777: tests that run as another
    /// uid make files here too).
    public static let root: String = {
        removeDirectoriesOfDeadTestProcesses()
        let dir = "/tmp/evbt-\(getpid())"
        mkdir(dir, 0o1777)
        chmod(dir, 0o1777)  // mkdir's mode is cut by the umask
        atexit { try? FileManager.default.removeItem(atPath: TestPaths.root) }
        return dir
    }()

    /// A fresh path in `root` that nothing exists at yet: `<tag>-<n><suffix>`.
    public static func file(_ tag: String, _ suffix: String = "") -> String {
        let n = counter.add(1, ordering: .relaxed).oldValue
        return "\(root)/\(tag)-\(n)\(suffix)"
    }

    public static func socket(_ tag: String = "t") -> String { file(tag, ".sock") }

    /// A fresh, not yet existing data directory (the broker creates it).
    public static func dataDirectory(_ tag: String = "d") -> String { file(tag, ".data") }

    /// Removes `/tmp/evbt-<pid>…` entries whose process is gone.
    private static func removeDirectoriesOfDeadTestProcesses() {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/tmp")) ?? [] where name.hasPrefix("evbt-") {
            let digits = name.dropFirst(5).prefix { $0.isNumber }
            guard let pid = pid_t(digits), pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
            try? FileManager.default.removeItem(atPath: "/tmp/" + name)
        }
    }

    /// The built `evbus` executable: it sits beside the test bundle in the build folder.
    public static var evbusBinary: String { builtExecutable("evbus") }

    /// The built `evbus-fib` executable.
    public static var fibBinary: String { builtExecutable("evbus-fib") }

    /// The built `evbus-test-peer` executable (peers that the tests run as processes).
    public static var testPeerBinary: String { builtExecutable("evbus-test-peer") }

    static func builtExecutable(_ name: String) -> String {
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var dir = exe.deletingLastPathComponent()
        // swift test runs <build>/evbusPackageTests.xctest; look beside it (and one level up, to be safe).
        for _ in 0..<3 {
            let candidate = dir.appendingPathComponent(name).path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return exe.deletingLastPathComponent().appendingPathComponent(name).path
    }
}


