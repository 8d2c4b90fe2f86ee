public import EvbusIO
public import EvbusWire
import Dispatch

/// A broker running on its own event-loop thread: what the `evbus broker` command and in-process
/// tests start.
public final class Broker: Sendable {
    public let loop: EventLoop
    public let socketPath: String
    private let server: LoopBound<BrokerServer>

    /// Starts the loop thread and binds the socket (or serves `listenFD`, a listening socket
    /// passed by systemd); throws if the broker cannot start.
    public static func start(config: BrokerConfig, log: Logger, listenFD: Int32? = nil) throws -> Broker {
        try config.validate()
        let loop = try EventLoop.startThread(name: "evbus-broker")
        do {
            let server = try loop.runAndWait {
                LoopBound(try BrokerServer(config: config, loop: loop, log: log, listenFD: listenFD), loop: loop)
            }
            return Broker(loop: loop, server: server)
        } catch {
            loop.stopAndJoin()
            throw error
        }
    }

    /// Dropped without `shutdown()`: the broker stops anyway, closing its connections at once,
    /// instead of serving on (its connections refer to the server without retaining it). A
    /// dispatch thread does the blocking stop and holds the server until the loop has ended,
    /// so no connection outlives what it refers to. After `shutdown()` this does nothing.
    deinit {
        let loop = self.loop, server = self.server
        DispatchQueue.global().async {
            let done = DispatchSemaphore(value: 0)
            do {
                try loop.execute { server.value.shutdown(graceNanos: 0) { done.signal() } }
            } catch {
                return  // already shut down
            }
            done.wait()
            loop.stopAndJoin()
            withExtendedLifetime(server) {}
        }
    }

    private init(loop: EventLoop, server: LoopBound<BrokerServer>) {
        self.loop = loop
        self.server = server
        self.socketPath = try! loop.runAndWait { server.value.socketPath }
    }

    /// Runs `body` on the broker's loop every `interval` until it stops (the watchdog: a loop
    /// that hangs stops the pings, which is the point).
    public func every(_ interval: Duration, _ body: @escaping @Sendable () -> Void) {
        let nanos = UInt64(interval.components.seconds) * 1_000_000_000 + UInt64(interval.components.attoseconds / 1_000_000_000)
        try? loop.execute { [loop] in
            _ = loop.scheduleTimer(afterNanos: nanos, everyNanos: nanos) { body() }
        }
    }

    /// The broker's counters.
    /// - Throws: `EventLoopError.stopped` after `shutdown()`.
    @available(*, noasync, message: "blocks its thread until the broker's loop answers")
    public func statistics() throws(EventLoopError) -> [StatEntry] {
        do {
            return try loop.runAndWait { [server] in server.value.statistics }
        } catch {
            throw .stopped  // the body cannot throw: only the loop refuses
        }
    }

    /// Puts a reread config's access rules and quotas in force (what SIGHUP does); returns how many
    /// subscriptions and consumers the new rules cancelled.
    /// - Throws: `EventLoopError.stopped` after `shutdown()`.
    @available(*, noasync, message: "blocks its thread until the broker's loop answers")
    @discardableResult
    public func reload(_ config: BrokerConfig) throws(EventLoopError) -> Int {
        do {
            return try loop.runAndWait { [server] in server.value.reload(config) }
        } catch {
            throw .stopped
        }
    }

    /// Graceful stop: close the listener and socket file, send CLOSE to every client, flush, close,
    /// then end the loop thread. Blocks until done (at most about `graceNanos` plus a little).
    /// Calling it again, or after the loop stopped, returns at once.
    @available(*, noasync, message: "blocks its thread until every connection has closed")
    public func shutdown(graceNanos: UInt64 = 1_000_000_000) {
        let done = DispatchSemaphore(value: 0)
        do {
            try loop.execute { [server] in
                server.value.shutdown(graceNanos: graceNanos) { done.signal() }
            }
        } catch {
            return  // already shut down
        }
        done.wait()
        loop.stopAndJoin()
    }

    /// `shutdown` for async code: suspends instead of blocking while connections close.
    public func shutdown(graceNanos: UInt64 = 1_000_000_000) async {
        let loop = self.loop
        let server = self.server
        let wasRunning: Bool = await withCheckedContinuation { c in
            do {
                try loop.execute { server.value.shutdown(graceNanos: graceNanos) { c.resume(returning: true) } }
            } catch {
                c.resume(returning: false)
            }
        }
        // Every connection is closed: the loop ends within one iteration, so the join is short.
        if wasRunning { loop.stopAndJoin() }
    }
}
