import EvbusIO

/// One queued piece of work: a dispatched event (`pending` set), or submitted code (`job` set).
/// Two optionals rather than an enum, so the engine can move the `Pending` out and check whether
/// anyone else still holds it (see `Engine.recycle`).
struct Work: Sendable {
    var event: String
    var payload: any Sendable
    var context: [String: any Sendable]
    var dispatchedAt: ContinuousClock.Instant
    var pending: Pending<DispatchResult>?
    /// Submitted code (boxed, so the common dispatch case keeps `Work` small).
    var job: Job?

    /// Fails it without running it (the controller stopped first).
    func fail(_ error: ControllerError) {
        pending?.resolve(.failure(error))
        job?.cancel(error)
    }
}

/// Submitted code, or a change to the engine itself, queued in order with dispatches.
final class Job: Sendable {
    enum Body: Sendable {
        /// `submit`ted plain code.
        case plain(@Sendable (Session) -> Void)
        /// `submit`ted async code: awaited before anything queued after it runs.
        case async(@Sendable (Session) async -> Void)
        /// A handler added or removed, or a barrier (`pending()`): applied when the queue reaches
        /// it, so a caller's change takes effect before any dispatch that caller makes afterwards.
        /// Not work: it neither makes the controller active nor waits for anything.
        case change(@Sendable (Engine) -> Void)
    }

    let body: Body
    let cancel: @Sendable (ControllerError) -> Void

    init(_ body: Body, cancel: @escaping @Sendable (ControllerError) -> Void = { _ in }) {
        self.body = body
        self.cancel = cancel
    }
}

/// The controller's state on its loop thread: the handler table, the FIFO queue, and the runner
/// that takes one piece of work at a time. Loop-bound: touched only on the controller's loop.
///
/// The properties read or changed for every event are `@exclusivity(unchecked)`: the runtime's
/// dynamic exclusivity checks on them cost ~6% of a dispatch-heavy profile. Safe because only the
/// loop thread touches an engine, and no access to one of them is held across a call that could
/// reach the same property (each is a plain read, or a mutation of a value type that calls out to
/// nothing).
final class Engine {
    /// Strong: the controller and its engine keep each other alive until the controller stops,
    /// when the controller lets go of the engine (see `Controller.didStop`).
    let controller: Controller
    private let sessionOwner: SessionOwner
    let loop: EventLoop
    let executor: LoopTaskExecutor
    @exclusivity(unchecked) var handlers = HandlerTable()
    @exclusivity(unchecked) private var queue = WorkFIFO()
    /// Segments the queue has emptied, handed back to the controller's inbox on its next batch.
    @exclusivity(unchecked) var spentSegments = SegmentPool()
    /// Resolved `Pending`s nobody holds any more, handed back the same way for reuse.
    @exclusivity(unchecked) var spentPendings: [Pending<DispatchResult>] = []
    static let pendingsKept = 8192
    /// An async handler or job is in progress: the queue waits for it (strict FIFO).
    @exclusivity(unchecked) private var busy = false
    @exclusivity(unchecked) private var active = false
    private var stopping = false
    private(set) var stopped = false
    /// `started` has been emitted: a `started` handler added later runs at once.
    private var started = false
    @exclusivity(unchecked) var nextWaiters: [String: [(id: UInt64, waiter: CheckedContinuation<Session, any Error>)]] = [:]
    var nextWaiterID: UInt64 = 0
    /// Sockets opened on this controller's loop (listeners, connections, UDP), by object: each
    /// entry closes one. All are closed when the controller stops.
    var sockets: [ObjectIdentifier: () -> Void] = [:]

    init(controller: Controller, loop: EventLoop) {
        self.controller = controller
        sessionOwner = SessionOwner(controller)
        self.loop = loop
        executor = LoopTaskExecutor(loop: loop)
    }

    /// This engine, for async work that the task executor runs back on this loop (checked there).
    private var bound: LoopBound<Engine> { LoopBound(self, loop: loop) }

    // MARK: Queue

    /// Takes a batch from the controller's inbox (moving its segments, not copying items) and runs
    /// what it can.
    func enqueue(_ batch: inout WorkFIFO) {
        if stopping || stopped {
            let error = ControllerError(.shutDown, "the controller '\(controller.name)' is shut down")
            while let work = batch.popFirst(pool: &spentSegments) { work.fail(error) }
            return
        }
        queue.append(contentsOf: &batch)
        if !busy { drain() }
    }

    /// Runs queued work in order until the queue is empty or an async piece suspends it.
    private func drain() {
        while !busy, var work = queue.popFirst(pool: &spentSegments) {
            if let job = work.job, case .change(let apply) = job.body {
                apply(self)
                continue
            }
            if !active {
                active = true
                emitLifecycle(Controller.Lifecycle.active, payload: ())
            }
            run(&work)
        }
        if queue.isEmpty {
            if active && !busy {
                active = false
                emitLifecycle(Controller.Lifecycle.idle, payload: ())
            }
            if stopping && !busy { finishStop() }
        }
    }

    private func run(_ work: inout Work) {
        if var pending = work.pending {
            work.pending = nil  // now `pending` and whoever called `dispatch` hold it
            let chosen = handlers.take(work.event, context: work.context)
            resolveNextWaiters(work)
            if let bodies = chosen.plainBodies {
                finish(pending, runHandlersSync(bodies, work))
                recycle(&pending)
            } else {
                busy = true
                let me = bound
                let (work, pending) = (work, pending)
                Task(executorPreference: executor) {
                    let outcome = await me.value.runHandlersAsync(chosen.registrations, work)
                    me.value.finish(pending, outcome)
                }
            }
        } else if let job = work.job {
            let session = makeSession(work)
            switch job.body {
            case .plain(let run): run(session)
            case .async(let run):
                busy = true
                let me = bound
                Task(executorPreference: executor) {
                    await run(session)
                    me.value.resume()
                }
            case .change(let apply): apply(self)  // taken in `drain`; here for completeness
            }
        }
    }

    /// Keeps a resolved `Pending` for the next dispatch when nobody else holds it (the caller
    /// dropped the result, as fire-and-forget dispatchers do): one allocation less per dispatch,
    /// and no memory allocated on the dispatching thread and freed on this one (glibc handles that
    /// pattern slowly: a quarter of a dispatch-heavy profile). Nobody can reach an unreferenced
    /// Pending, so reusing it is invisible.
    private func recycle(_ pending: inout Pending<DispatchResult>) {
        guard spentPendings.count < Self.pendingsKept, isKnownUniquelyReferenced(&pending) else { return }
        pending.reset()
        spentPendings.append(pending)
    }

    func finish(_ pending: Pending<DispatchResult>, _ outcome: Result<DispatchResult, any Error>) {
        pending.resolve(outcome)
        if busy { resume() }
    }

    /// An async piece completed: carry on with the queue.
    func resume() {
        busy = false
        drain()
    }

    private func makeSession(_ work: Work) -> Session {
        Session(
            event: work.event, payload: work.payload, context: work.context, dispatchedAt: work.dispatchedAt,
            startedAt: .now, owner: sessionOwner)
    }

    private func runHandlersSync(_ bodies: [PlainHandler], _ work: Work) -> Result<DispatchResult, any Error> {
        var results: [any Sendable] = []
        var firstError: (any Error)?
        let session = makeSession(work)
        for body in bodies {
            do {
                if let value = try body(session) { results.append(value) }
            } catch {
                firstError = firstError ?? error
                if handlerFailed(error, work) { break }
            }
        }
        if let firstError { return .failure(firstError) }
        return .success(DispatchResult(results: results, handlersRun: bodies.count))
    }

    func runHandlersAsync(_ chosen: [Registration], _ work: Work) async -> Result<DispatchResult, any Error> {
        var results: [any Sendable] = []
        var firstError: (any Error)?
        let session = makeSession(work)
        for r in chosen {
            do {
                let value: (any Sendable)?
                switch r.body {
                case .sync(let body): value = try body(session)
                case .async(let body): value = try await body(session)
                }
                if let value { results.append(value) }
            } catch {
                firstError = firstError ?? error
                if handlerFailed(error, work) { break }
            }
        }
        if let firstError { return .failure(firstError) }
        return .success(DispatchResult(results: results, handlersRun: chosen.count))
    }

    /// Reports a handler's error; returns true when the controller stops because of it.
    func handlerFailed(_ error: any Error, _ work: Work) -> Bool {
        emitLifecycle(Controller.Lifecycle.exception, payload: HandlerFailure(event: work.event, error: error))
        guard controller.stopOnError else { return false }
        stop(reason: ControllerError(.shutDown, "the controller '\(controller.name)' stopped after a handler for '\(work.event)' failed: \(error)"))
        return true
    }

    /// Nothing is queued on the loop and nothing is running (the caller is a change or barrier,
    /// which is neither).
    var isQuiet: Bool { queue.isEmpty && !busy }

    // MARK: Handlers

    /// Adds a handler. `started` is emitted once, at construction: a handler for it added later
    /// runs now instead (and only now), so `on(Lifecycle.started)` keeps its promise whenever it
    /// is called.
    func add(_ r: Registration) {
        if r.event == Controller.Lifecycle.started && started {
            runLifecycle([r], Work(event: r.event, payload: (), context: [:], dispatchedAt: .now))
            return
        }
        handlers.add(r)
    }

    /// Emits `started` once, after the blueprints given at construction are installed.
    func start() {
        started = true
        emitLifecycle(Controller.Lifecycle.started, payload: ())
    }

    // MARK: Lifecycle

    /// Runs plain handlers of a lifecycle event right away (lifecycle events are not queued, so
    /// they never cause further active/idle events). Their errors are ignored.
    func emitLifecycle(_ name: String, payload: any Sendable) {
        guard handlers.has(name) || nextWaiters[name] != nil else { return }  // nobody listens: free
        let work = Work(event: name, payload: payload, context: [:], dispatchedAt: .now)
        resolveNextWaiters(work)
        runLifecycle(handlers.take(name, context: [:]).registrations, work)
    }

    private func runLifecycle(_ registrations: [Registration], _ work: Work) {
        for r in registrations {
            switch r.body {
            case .sync(let body): _ = try? body(makeSession(work))
            case .async(let body):
                let session = makeSession(work)
                Task(executorPreference: executor) { _ = try? await body(session) }
            }
        }
    }

    /// Stops after everything queued so far (`shutdown`).
    func requestStop() {
        guard !stopping && !stopped else { return }
        stopping = true
        if !busy && queue.isEmpty { finishStop() }
    }

    /// Stops now: queued work fails with `reason`.
    func stop(reason: ControllerError) {
        while let w = queue.popFirst(pool: &spentSegments) { w.fail(reason) }
        stopping = true
        if !busy { finishStop() }
    }

    private func finishStop() {
        guard !stopped else { return }
        stopped = true
        stopping = false
        emitLifecycle(Controller.Lifecycle.stopped, payload: ())
        for (_, list) in nextWaiters {
            for w in list { w.waiter.resume(throwing: ControllerError(.shutDown, "the controller '\(controller.name)' stopped")) }
        }
        nextWaiters.removeAll()
        let open = sockets
        sockets = [:]
        for close in open.values { close() }
        controller.didStop()
    }

    // MARK: next()

    private func resolveNextWaiters(_ work: Work) {
        guard !nextWaiters.isEmpty, let waiters = nextWaiters.removeValue(forKey: work.event) else { return }
        let session = makeSession(work)
        for w in waiters { w.waiter.resume(returning: session) }
    }
}

/// The payload of the `exception` lifecycle event.
public struct HandlerFailure: Sendable {
    public var event: String
    public var error: any Error
}
