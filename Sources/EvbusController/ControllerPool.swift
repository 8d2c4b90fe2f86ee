import Synchronization

/// Several worker controllers behind one front (EventDriven's ControllerPool): each `dispatch` or
/// `submit` goes to the worker with the least work in hand, so blocking or CPU-heavy work runs in
/// parallel while each worker stays strictly sequential.
public final class ControllerPool: Sendable {
    public let workers: [Controller]
    private let load: Mutex<[Int]>

    /// Starts `count` workers, each on its own thread, with the same handlers.
    public init(name: String = "pool", workers count: Int, blueprints: [Blueprint] = []) throws {
        precondition(count > 0, "a pool needs at least one worker")
        workers = try (0..<count).map { try Controller(name: "\(name)-\($0)", blueprints: blueprints) }
        load = Mutex(Array(repeating: 0, count: count))
    }

    /// Registers a handler on every worker.
    public func install(_ blueprint: Blueprint) throws(ControllerError) { for w in workers { try w.install(blueprint) } }

    private func pick() -> Int {
        load.withLock { l in
            let i = l.indices.min { l[$0] < l[$1] }!
            l[i] += 1
            return i
        }
    }

    private func done(_ i: Int) { load.withLock { $0[i] -= 1 } }

    /// Dispatches to the least-loaded worker.
    @discardableResult
    public func dispatch(_ event: String, _ payload: any Sendable = (), context: [String: any Sendable] = [:]) -> Pending<DispatchResult> {
        let i = pick()
        let pending = workers[i].dispatch(event, payload, context: context)
        pending.whenResolved { [self] in done(i) }
        return pending
    }

    /// Runs `body` on the least-loaded worker.
    @discardableResult
    public func submit<T: Sendable>(_ body: @escaping @Sendable (Session) async throws -> T) -> Pending<T> {
        let i = pick()
        let pending = workers[i].submit(body)
        pending.whenResolved { [self] in done(i) }
        return pending
    }

    /// Shuts every worker down (each finishes what it has queued).
    public func shutdown() { for w in workers { w.shutdown() } }

    /// Suspends until every worker has stopped.
    public func stopped() async { for w in workers { await w.stopped() } }
}
