public import EvbusIO
public import EvbusWire
import Dispatch

/// A broker running on its own event-loop thread: what the `evbus broker` command and in-process
/// tests start.
public final class Broker: Sendable {
    public let loop: EventLoop
    public let socketPath: String
    private let server: LoopBound<BrokerServer>

    /// Starts the loop thread and binds the socket; throws if the broker cannot start.
    public static func start(config: BrokerConfig, log: Logger) throws -> Broker {
        try config.validate()
        let loop = try EventLoop.startThread(name: "evbus-broker")
        do {
            let server = try loop.runAndWait {
                LoopBound(try BrokerServer(config: config, loop: loop, log: log), loop: loop)
            }
            return Broker(loop: loop, server: server)
        } catch {
            loop.stopAndJoin()
            throw error
        }
    }

    private init(loop: EventLoop, server: LoopBound<BrokerServer>) {
        self.loop = loop
        self.server = server
        self.socketPath = try! loop.runAndWait { server.value.socketPath }
    }

    /// The broker's counters.
    public func statistics() -> [StatEntry] {
        (try? loop.runAndWait { [server] in server.value.statistics }) ?? []
    }

    /// Graceful stop: close the listener and socket file, send CLOSE to every client, flush, close,
    /// then end the loop thread. Blocks until done (at most about `graceNanos` plus a little).
    public func shutdown(graceNanos: UInt64 = 1_000_000_000) {
        let done = DispatchSemaphore(value: 0)
        loop.execute { [server] in
            server.value.shutdown(graceNanos: graceNanos) { done.signal() }
        }
        done.wait()
        loop.stopAndJoin()
    }
}
