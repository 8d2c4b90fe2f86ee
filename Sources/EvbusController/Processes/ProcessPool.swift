import EvbusIO
import Synchronization

/// Worker processes behind one front (EventDriven's Subprocess adapter, as a pool): it starts N
/// workers, each running a controller with a `WorkerBlueprint`'s handlers, hands each piece of
/// work to an idle one (one at a time per worker, oldest work first) and returns a `Pending` of
/// the typed result. A worker that crashes fails its work in flight with `workerCrashed` and is
/// replaced; `shutdown()` (or dropping the pool) lets queued work finish, then stops them all.
///
/// ```swift
/// // First thing in main: in a worker this serves the pool and never returns.
/// var fib = WorkerBlueprint()
/// fib.on("fib") { (n: Int) in slowFib(n) }
/// ProcessPool.runWorkerIfAsked(fib)
///
/// let pool = try ProcessPool(name: "fib", workers: 4)      // workers run this same program
/// let result = try await pool.dispatch("fib", 30, as: Int.self).value
/// ```
///
/// Work and results cross as `Codable` values in the compact codec over a private socket pair
/// per worker (no broker is involved). Workers are started with `posix_spawn`, inheriting the
/// environment and nothing else.
public final class ProcessPool: Sendable {
    public let name: String
    private let io: Controller
    private let core: LoopBound<PoolCore>
    private let nextJob = Atomic<UInt64>(1)
    private let view = PoolView()

    /// Starts `workers` processes of `executable` (by default this program) with `arguments`;
    /// the executable must call `ProcessPool.runWorkerIfAsked` with its handlers.
    /// - Throws: `socketFailed` when a worker cannot be started.
    public init(name: String = "pool", workers count: Int, executable: String? = nil, arguments: [String] = []) throws {
        precondition(count > 0, "a process pool needs at least one worker")
        self.name = name
        io = try Controller(name: "\(name)-io")
        let path = executable ?? WorkerProcess.ownExecutable
        let view = self.view
        let io = self.io
        core = try io.loop.runAndWait {
            let core = PoolCore(name: name, controller: io, executable: path, arguments: arguments, count: count) { pids, restarts in
                view.state.withLock { $0 = (pids, restarts) }
            }
            try core.start()
            return LoopBound(core, loop: io.loop)
        }
    }

    /// The workers' process ids (a crashed worker's replacement has a new one).
    public var workerPIDs: [Int32] { view.state.withLock { $0.pids } }
    /// How many workers have been replaced after they exited or crashed.
    public var restarts: Int { view.state.withLock { $0.restarts } }

    /// Runs `event`'s handler in an idle worker with `input`; the Pending gets its result as
    /// `Output`. Fails with `workerFailed` (the handler threw, or the worker has no handler for
    /// `event`), `workerCrashed` (the worker died meanwhile, or no worker can start: three exited
    /// in a row before they were ready), `shutDown`, or a `DecodingError`
    /// when the result is not an `Output`.
    @discardableResult
    public func dispatch<Input: Encodable & Sendable, Output: Decodable & Sendable>(
        _ event: String, _ input: Input, as output: Output.Type = Output.self
    ) -> Pending<Output> {
        let pending = Pending<Output>(loop: nil)
        let bytes: [UInt8]
        do { bytes = try CompactEncoder().encode(input) } catch {
            pending.resolve(.failure(error))
            return pending
        }
        let job = PoolCore.Job(id: nextJob.add(1, ordering: .relaxed).oldValue, event: event, input: bytes) { outcome in
            pending.resolve(outcome.flatMap { bytes in Result { try CompactDecoder().decode(Output.self, from: bytes) } })
        }
        let core = self.core
        do { try io.loop.execute { core.value.submit(job) } } catch {
            pending.resolve(.failure(ControllerError(.shutDown, "the process pool '\(name)' is shut down")))
        }
        return pending
    }

    /// Accepts no more work; what was dispatched still runs; then every worker is stopped.
    /// `stopped()` returns once all have exited.
    public func shutdown() {
        let core = self.core
        let io = self.io
        try? io.loop.execute { core.value.shutdown { io.shutdown() } }
    }

    /// Suspends until every worker has exited after `shutdown()`.
    public func stopped() async { await io.stopped() }

    /// A pool dropped without `shutdown()` shuts down as `shutdown()` does: what was dispatched
    /// still runs and its `Pending`s resolve (they hold the pool's state, not the pool), then
    /// the workers are stopped and collected and the pool's thread ends. Without this they
    /// would idle until this process exits.
    deinit { shutdown() }
}

/// What the pool's loop publishes for other threads to read.
final class PoolView: Sendable {
    let state = Mutex<(pids: [Int32], restarts: Int)>(([], 0))
}
