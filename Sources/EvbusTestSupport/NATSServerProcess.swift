import Foundation
import Glibc

/// A real `nats-server` on loopback, for the NATS client and bridge tests (installed by
/// `.ci/run` when missing; never a build dependency). Optionally a node of a cluster.
public final class NATSServerProcess: Sendable {
    public static let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }

    public let port: UInt16
    public let clusterPort: UInt16
    public let process: RunningProcess
    public var url: String { "nats://127.0.0.1:\(port)" }

    /// Starts a server on `port` (a free one by default) and waits until it accepts connections.
    /// - Parameters:
    ///   - routes: cluster ports of other nodes to join (a cluster needs `clusterPort` on each).
    ///   - jetStreamDirectory: turns JetStream on, storing under it.
    public init(port: UInt16? = nil, clusterPort: UInt16? = nil, routes: [UInt16] = [], name: String = "n", jetStreamDirectory: String? = nil) async throws {
        guard let binary = Self.binary else { throw TestSupportError("nats-server is not installed (apt-get install -y nats-server)") }
        self.port = try port ?? Self.freePort()
        self.clusterPort = try clusterPort ?? Self.freePort()
        var arguments = ["-a", "127.0.0.1", "-p", "\(self.port)", "-n", name]
        if !routes.isEmpty || clusterPort != nil {
            arguments += ["--cluster_name", "evbt", "--cluster", "nats://127.0.0.1:\(self.clusterPort)"]
            if !routes.isEmpty { arguments += ["--routes", routes.map { "nats://127.0.0.1:\($0)" }.joined(separator: ",")] }
        }
        if let jetStreamDirectory { arguments += ["-js", "-sd", jetStreamDirectory] }
        process = try RunningProcess(binary, arguments)
        let port = self.port
        let up = await eventually(20) { Self.accepts(port) || !process.isRunning }
        guard up, process.isRunning else { throw TestSupportError("nats-server did not start: \(process.stderr)") }
    }

    /// Stops it (SIGKILL: a node that dies, as the failover tests want).
    public func kill() async {
        process.signal(SIGKILL)
        _ = await process.waitForExit()
    }

    /// A TCP port nothing listens on right now.
    public static func freePort() throws -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard ok else { throw TestSupportError("no free port: \(String(cString: strerror(errno)))") }
        return UInt16(bigEndian: addr.sin_port)
    }

    static func accepts(_ port: UInt16) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}
