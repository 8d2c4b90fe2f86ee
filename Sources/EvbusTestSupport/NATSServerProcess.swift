import Foundation
import Glibc

/// A real `nats-server` on loopback, for the NATS client and bridge tests (installed by
/// `.ci/run` when missing; never a build dependency). Optionally a node of a cluster.
public final class NATSServerProcess: Sendable {
    public static let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }

    public let port: UInt16
    /// Its route port when it is a cluster node (0 otherwise).
    public let clusterPort: UInt16
    public let process: RunningProcess
    public var url: String { "nats://127.0.0.1:\(port)" }

    /// Starts a server and waits until it accepts connections. Ports are the server's own
    /// choice (`-1`) unless given, read back from its log, so parallel tests never race for one.
    /// - Parameters:
    ///   - cluster: make it a cluster node (routes on a port of its own).
    ///   - routes: route ports of other nodes to join (implies `cluster`).
    ///   - jetStreamDirectory: turns JetStream on, storing under it.
    ///   - arguments: more of the server's options (`--user`, `--auth`, ...).
    public init(
        port: UInt16? = nil, cluster: Bool = false, routes: [UInt16] = [], name: String = "n", jetStreamDirectory: String? = nil,
        arguments more: [String] = []
    ) async throws {
        guard let binary = Self.binary else { throw TestSupportError("nats-server is not installed (apt-get install -y nats-server)") }
        var arguments = ["-a", "127.0.0.1", "-p", port.map { "\($0)" } ?? "-1", "-n", name]
        let clustered = cluster || !routes.isEmpty
        if clustered {
            arguments += ["--cluster_name", "evbt", "--cluster", "nats://127.0.0.1:-1"]
            if !routes.isEmpty { arguments += ["--routes", routes.map { "nats://127.0.0.1:\($0)" }.joined(separator: ",")] }
        }
        if let jetStreamDirectory { arguments += ["-js", "-sd", jetStreamDirectory] }
        arguments += more
        let process = try RunningProcess(binary, arguments)
        self.process = process
        func listening(_ what: String) -> UInt16? {
            guard let line = process.stderr.split(separator: "\n").first(where: { $0.contains("Listening for \(what) connections on") }),
                  let colon = line.lastIndex(of: ":") else { return nil }
            return UInt16(line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        let up = await eventually(20) {
            (listening("client") != nil && (!clustered || listening("route") != nil)) || !process.isRunning
        }
        guard up, process.isRunning, let clientPort = listening("client") else {
            throw TestSupportError("nats-server did not start: \(process.stderr)")
        }
        self.port = clientPort
        self.clusterPort = clustered ? listening("route") ?? 0 : 0
    }

    /// Stops it (SIGKILL: a node that dies, as the failover tests want).
    public func kill() async {
        process.signal(SIGKILL)
        _ = await process.waitForExit()
    }
}
