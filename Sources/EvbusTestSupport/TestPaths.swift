import Foundation
import Synchronization

/// Short, unique socket paths (Unix sockets allow 107 bytes) under /tmp.
public enum TestPaths {
    private static let counter = Atomic<Int>(0)

    public static func socket(_ tag: String = "t") -> String {
        let n = counter.add(1, ordering: .relaxed).oldValue
        return "/tmp/evbt-\(getpid())-\(tag)-\(n).sock"
    }

    /// A fresh, not yet existing data directory under /tmp (the broker creates it).
    public static func dataDirectory(_ tag: String = "d") -> String {
        let n = counter.add(1, ordering: .relaxed).oldValue
        return "/tmp/evbt-\(getpid())-\(tag)-\(n).data"
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


