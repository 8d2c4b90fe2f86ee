public import Evbus
import EvbusIO
import EvbusWire
import Foundation

/// The real `evbus broker` binary on a fresh socket.
public final class BrokerProcess: TestBroker, Sendable {
    public let socketPath: String
    public let dataDir: String
    public let process: RunningProcess

    /// Starts `evbus broker --socket <fresh path> --data-dir <dir>` plus `arguments`, and waits
    /// until it accepts connections. `dataDir` defaults to a fresh directory (pass the same one
    /// again to restart a broker on its data).
    public init(
        arguments: [String] = [], socketPath: String = TestPaths.socket("bp"), dataDir: String = TestPaths.dataDirectory(),
        environment: [String: String] = [:]
    ) async throws {
        self.socketPath = socketPath
        self.dataDir = dataDir
        let dataArguments = arguments.contains("--data-dir") ? [] : ["--data-dir", dataDir]
        process = try RunningProcess(TestPaths.evbusBinary, ["broker", "--socket", socketPath] + dataArguments + arguments, environment: environment)
        let up = await eventually(30) { UnixSocket.isLive(path: socketPath) || !process.isRunning }
        guard up, process.isRunning else {
            throw TestSupportError("evbus broker did not start: \(process.stderr)")
        }
    }

    /// SIGTERM and wait; returns the exit status.
    @discardableResult
    public func stop() async -> Int32 {
        process.signal(SIGTERM)
        return await process.waitForExit()
    }
}

/// A broker in this process, on its own loop thread, with its log lines captured.
public final class InProcessBroker: TestBroker, Sendable {
    public let broker: Broker
    public let logLines: LogCapture
    public var socketPath: String { broker.socketPath }

    public init(configure: (inout BrokerConfig) -> Void = { _ in }) throws {
        var config = BrokerConfig()
        config.socketPath = TestPaths.socket("ip")
        config.logLevel = .info
        configure(&config)
        let capture = LogCapture()
        logLines = capture
        broker = try Broker.start(config: config, log: Logger(label: "test-broker", level: config.logLevel, sink: { capture.append($0) }))
    }

    /// A counter from the broker's statistics.
    public func stat(_ name: String) -> UInt64 {
        ((try? broker.statistics()) ?? []).first { $0.name == name }?.value ?? 0
    }

    public func shutdown() { broker.shutdown() }

}

import Synchronization

/// Log lines collected from a broker.
public final class LogCapture: Sendable {
    private let lines = Mutex<[String]>([])
    public init() {}
    public func append(_ line: String) { lines.withLock { $0.append(line) } }
    public var all: [String] { lines.withLock { $0 } }
    public func contains(_ text: String) -> Bool { all.contains { $0.contains(text) } }
}

public struct TestSupportError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

@_exported public import EvbusBroker

/// A broker a test talks to (in this process or the `evbus` binary), and the one-line ways to
/// connect peers to it.
public protocol TestBroker {
    var socketPath: String { get }
}

extension TestBroker {
    /// A peer connected to this broker: `let worker = try await broker.connect("worker")`.
    public func connect(_ name: String? = nil, options: Peer.Options = Peer.Options()) async throws -> Peer {
        try await Peer.connect(to: socketPath, name: name, options: options)
    }

    /// Two peers connected to this broker: `let (producer, worker) = try await broker.connect("producer", "worker")`.
    public func connect(_ first: String, _ second: String) async throws -> (Peer, Peer) {
        (try await connect(first), try await connect(second))
    }
}
