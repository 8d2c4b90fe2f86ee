public import EvbusIO
import Dispatch
import Glibc
import Synchronization

/// What dispatching threads hand the controller's loop, under one lock.
struct Inbox {
    var items = WorkFIFO()
    var pool = SegmentPool()
    /// Resolved, unreferenced `Pending`s the engine gave back, for the next dispatches.
    var spares: [Pending<DispatchResult>] = []
    /// A drain is scheduled on the loop (or running): producers need not wake it.
    var scheduled = false
    /// Plain threads waiting for the loop to take what is queued (see `Inbox.limit`).
    var waiting: [DispatchSemaphore] = []
    /// Shut down or stopped: nothing more is queued. Checked under the lock, so nothing can slip
    /// in after the loop took the last batch.
    var closed = false

    /// Items a plain thread may queue ahead of the loop before it waits for the loop to take them.
    /// Backpressure for a producer faster than the handlers: memory stays bounded, and what is
    /// queued stays in the CPU caches (an unbounded backlog made every event a trip to memory,
    /// and dispatching 40% slower). Loop threads and Swift tasks never wait (see `waitForRoom`).
    static let limit = 4096

    /// Marks a drain scheduled; true when the caller must schedule it (it was not yet).
    mutating func markScheduled() -> Bool {
        if scheduled { return false }
        scheduled = true
        return true
    }
}

/// A serial event loop on its own thread: handlers run one at a time, in the order their events
/// were dispatched, so they need no locks.
///
/// ```swift
/// let controller = try Controller(name: "ui")
/// controller.on("greet") { session in "hello, \(session.payload)" }
/// let result = try await controller.dispatch("greet", "Ada").value   // results: ["hello, Ada"]
/// ```
///
/// `dispatch` and `submit` are safe from any thread and return a `Pending`. Async handlers are
/// awaited on the controller's thread before the next event starts (strict FIFO).
public final class Controller: Sendable {
    /// Names of the events every controller emits about itself. Observe them with `on(...)`;
    /// they run immediately (they are not queued), and only plain handlers are awaited.
    public enum Lifecycle {
        public static let started = "controller.started"
        public static let stopped = "controller.stopped"
        /// The queue went from empty to busy.
        public static let active = "controller.active"
        /// The queue drained.
        public static let idle = "controller.idle"
        /// A handler threw; the payload is a `HandlerFailure`.
        public static let exception = "controller.exception"
    }

    public let name: String
    /// Values every handler sees, given at construction: `session[key]` finds them when the
    /// dispatch's own context has no such key, and `session.controllerContext` holds them all.
    public let context: [String: any Sendable]
    /// The phases handlers run in, in order (`Phase.standard` unless given others).
    public var phases: [Phase] { vocabulary.withLock { $0.phases } }
    /// Stop at the first handler error (instead of reporting it and carrying on).
    public let stopOnError: Bool
    public let loop: EventLoop
    private let ownsLoop: Bool
    private let engine: Mutex<LoopBound<Engine>?>
    /// Cleared by `shutdown` (once) and on stop.
    private let accepting = Atomic<Bool>(true)
    /// Handler ids, unique in the process.
    private static let nextHandlerID = Atomic<UInt64>(1)
    private let listeners = Mutex<[(controller: Controller, allow: Set<String>?)]>([])
    private let stoppedSignal = Mutex<(done: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))
    /// Work dispatched from any thread waits here; the first item of a batch schedules one drain on
    /// the loop, which takes the whole batch (one wake-up and no allocation per dispatch).
    private let inbox = Mutex<Inbox>(Inbox())
    /// Lets `dispatch` skip the listener lock when nobody listens (the usual case).
    private let listenerCount = Atomic<Int>(0)
    private let vocabulary: Mutex<HandlerVocabulary>
    /// Keywords are declared: dispatches check their context (the lock is skipped otherwise).
    private let restricted = Atomic<Bool>(false)

    /// The default `idleSpin`: events closer together than 50 µs (20,000 a second and more) are
    /// picked up without a wake-up.
    public static let defaultIdleSpin: Duration = .microseconds(50)

    /// Starts a controller.
    /// - Parameters:
    ///   - loop: run on an existing loop (several controllers may share one thread, all strictly
    ///     sequential); nil starts a thread of its own.
    ///   - blueprints: handler sets to install; they are in place before anything is dispatched,
    ///     and their `started` handlers see the `started` event.
    ///   - phases: the phases handlers run in, in order (the Twisted dispatcher's phases); by
    ///     default `before`, `during`, `after`. A handler naming another phase is refused.
    ///   - keywords: the only context keys match specs and dispatches may use (nil: any). A
    ///     handler matching on, or a dispatch carrying, another key is refused with
    ///     `unknownKeyword`; keys beginning `controller.` or `evbus.` belong to the library and
    ///     are always allowed. Change them with `allowKeywords`.
    ///   - context: values every session sees (`session[key]`, `session.controllerContext`).
    ///   - stopOnError: stop at the first handler error; by default errors go to the Pending and the
    ///     `exception` event, and the loop carries on.
    ///   - idleSpin: with a thread of its own, how long the controller keeps polling for the next
    ///     event before it sleeps, while events keep arriving that often (`EventLoop.idleSpin`):
    ///     an event then starts without a thread wake-up. Events arriving less often than this
    ///     never cause polling; `.zero` turns it off. Ignored with a shared `loop`.
    public init(
        name: String = "controller", loop: EventLoop? = nil, blueprints: [Blueprint] = [], stopOnError: Bool = false,
        phases: [Phase] = Phase.standard, keywords: Set<String>? = nil, context: [String: any Sendable] = [:],
        idleSpin: Duration = Controller.defaultIdleSpin
    ) throws {
        self.name = name
        self.stopOnError = stopOnError
        self.context = context
        let vocabulary = try HandlerVocabulary(phases: phases, keywords: keywords, controller: name)
        self.vocabulary = Mutex(vocabulary)
        restricted.store(keywords != nil, ordering: .relaxed)
        // Checked before the thread starts, so a refused blueprint leaves nothing running.
        var registrations: [Registration] = []
        for b in blueprints { registrations += try Self.prepare(b.entries, with: vocabulary, controller: name) }
        if let loop {
            self.loop = loop
            ownsLoop = false
        } else {
            self.loop = try EventLoop.startThread(name: name)
            self.loop.idleSpin = idleSpin
            ownsLoop = true
        }
        engine = Mutex(nil)
        let bound = try self.loop.runAndWait { [self, registrations] in
            let engine = Engine(controller: self, loop: self.loop)
            for r in registrations { engine.handlers.add(r) }
            return LoopBound(engine, loop: self.loop)
        }
        engine.withLock { $0 = bound }
        onEngine { $0.start() }
    }

    private func onEngine(_ body: @escaping @Sendable (Engine) -> Void) {
        guard let bound = engine.withLock({ $0 }) else { return }
        // A stopped loop means the controller has shut down: there is no engine left to act on.
        try? loop.execute { body(bound.value) }
    }

    // MARK: Handlers

    /// Registers a plain handler for `event`. Its return value (if not nil) joins the dispatch's results.
    ///
    /// Handler changes (`on`, `remove`, `install`) are queued in order with dispatches: a change
    /// takes effect before any dispatch its caller makes afterwards, and after every dispatch
    /// queued before it.
    /// - Parameters:
    ///   - phase: one of the controller's `phases`; each phase finishes before the next starts.
    ///   - match: keyword values the dispatch's context must carry (compared as text), e.g. `["role": "admin"]`.
    ///   - times: run at most this many times, then remove itself.
    /// - Returns: an id for `remove`.
    /// - Throws: `unknownPhase`, `unknownKeyword` (see `init`), or `shutDown`.
    @discardableResult
    public func on(
        _ event: String, phase: Phase = .during, match: [String: String] = [:], times: Int? = nil,
        _ body: @escaping @Sendable (Session) throws -> (any Sendable)?
    ) throws(ControllerError) -> HandlerID {
        try register([Blueprint.Entry(event: event, phase: phase, match: match, times: times, body: .sync(body))])[0]
    }

    /// Registers an async handler: awaited on the controller's thread before the next event starts.
    @discardableResult
    public func on(
        _ event: String, phase: Phase = .during, match: [String: String] = [:], times: Int? = nil,
        _ body: @escaping @Sendable (Session) async throws -> (any Sendable)?
    ) throws(ControllerError) -> HandlerID {
        try register([Blueprint.Entry(event: event, phase: phase, match: match, times: times, body: .async(body))])[0]
    }

    /// Installs every handler of a blueprint, all or none (refused as `on` refuses).
    @discardableResult
    public func install(_ blueprint: Blueprint) throws(ControllerError) -> [HandlerID] {
        try register(blueprint.entries)
    }

    /// Removes a handler; dispatches its caller makes afterwards no longer run it.
    public func remove(_ id: HandlerID) {
        _ = enqueueChange { $0.handlers.remove(id) }
    }

    /// Declares the only context keywords match specs and dispatches may use from now on (nil:
    /// any). Handlers already registered keep their match specs.
    public func allowKeywords(_ keywords: Set<String>?) {
        vocabulary.withLock {
            $0.keywords = keywords
            restricted.store(keywords != nil, ordering: .relaxed)
        }
    }

    /// The keywords declared with `init(keywords:)` or `allowKeywords` (nil: any).
    public var keywords: Set<String>? { vocabulary.withLock { $0.keywords } }

    /// Checks entries against the vocabulary and gives each an id, without registering them.
    private static func prepare(
        _ entries: [Blueprint.Entry], with vocabulary: HandlerVocabulary, controller name: String
    ) throws(ControllerError) -> [Registration] {
        var prepared: [Registration] = []
        for e in entries {
            let rank = try vocabulary.rank(of: e.phase, event: e.event, controller: name)
            try vocabulary.check(match: e.match, event: e.event, controller: name)
            let id = HandlerID(raw: nextHandlerID.add(1, ordering: .relaxed).oldValue)
            prepared.append(Registration(id: id, event: e.event, rank: rank, match: e.match, remaining: e.times, body: e.body))
        }
        return prepared
    }

    private func register(_ entries: [Blueprint.Entry]) throws(ControllerError) -> [HandlerID] {
        let registrations = try Self.prepare(entries, with: vocabulary.withLock { $0 }, controller: name)
        guard enqueueChange({ engine in for r in registrations { engine.add(r) } }) else { throw shutDownError }
        return registrations.map(\.id)
    }

    /// Queues a change to the engine in order with dispatches; false once the controller is shut
    /// down. `cancel` runs instead of `apply` if the controller stops before reaching it.
    func enqueueChange(
        cancel: @escaping @Sendable (ControllerError) -> Void = { _ in }, _ apply: @escaping @Sendable (Engine) -> Void
    ) -> Bool {
        let queued = inbox.withLock { box -> Bool? in
            guard !box.closed else { return nil }
            box.items.append(Work(event: "change", payload: (), context: [:], dispatchedAt: .now, job: Job(.change(apply), cancel: cancel)), pool: &box.pool)
            return box.markScheduled()
        }
        guard let schedule = queued else { return false }
        if schedule { scheduleDrain() }
        return true
    }

    // MARK: Dispatch and submit

    /// Queues `event`; every matching handler runs, in phase then registration order.
    /// - Returns: the handlers' results, or the first error one of them threw.
    @discardableResult
    public func dispatch(_ event: String, _ payload: any Sendable = (), context: [String: any Sendable] = [:]) -> Pending<DispatchResult> {
        if restricted.load(ordering: .relaxed), !context.isEmpty,
           let refusal = vocabulary.withLock({ $0.refusal(context: context, event: event, controller: name) }) {
            return .failed(refusal)
        }
        let now = ContinuousClock.now
        let loop = self.loop
        let (taken, schedule, full) = inbox.withLock { box -> (Pending<DispatchResult>?, Bool, Bool) in
            guard !box.closed else { return (nil, false, false) }
            let pending = box.spares.popLast() ?? Pending(loop: loop)
            box.items.append(Work(event: event, payload: payload, context: context, dispatchedAt: now, pending: pending), pool: &box.pool)
            return (pending, box.markScheduled(), box.items.count >= Inbox.limit)
        }
        guard let pending = taken else { return .failed(shutDownError) }
        if schedule { scheduleDrain() }
        if full { waitForRoom() }
        forward(event, payload, context)
        return pending
    }

    /// Queues code to run on the controller's thread, in order with dispatched events.
    @discardableResult
    public func submit<T: Sendable>(_ body: @escaping @Sendable (Session) throws -> T) -> Pending<T> {
        let pending = Pending<T>(loop: loop)
        let job = Job(.plain { session in pending.resolve(Result { try body(session) }) }, cancel: { pending.resolve(.failure($0)) })
        enqueue(Work(event: "submit", payload: (), context: [:], dispatchedAt: .now, job: job), orFail: pending)
        return pending
    }

    /// Queues async code; it is awaited on the controller's thread before anything queued after it runs.
    @discardableResult
    public func submit<T: Sendable>(_ body: @escaping @Sendable (Session) async throws -> T) -> Pending<T> {
        let pending = Pending<T>(loop: loop)
        let job = Job(
            .async { session in
                do { pending.resolve(.success(try await body(session))) } catch { pending.resolve(.failure(error)) }
            },
            cancel: { pending.resolve(.failure($0)) })
        enqueue(Work(event: "submit", payload: (), context: [:], dispatchedAt: .now, job: job), orFail: pending)
        return pending
    }

    var shutDownError: ControllerError {
        ControllerError(.shutDown, "the controller '\(name)' is shut down; nothing more can be dispatched to it")
    }

    private func enqueue<T>(_ work: Work, orFail pending: Pending<T>) {
        let queued = inbox.withLock { box -> (schedule: Bool, full: Bool)? in
            guard !box.closed else { return nil }
            box.items.append(work, pool: &box.pool)
            return (box.markScheduled(), box.items.count >= Inbox.limit)
        }
        guard let (schedule, full) = queued else {
            pending.resolve(.failure(shutDownError))
            return
        }
        if schedule { scheduleDrain() }
        if full { waitForRoom() }
    }

    /// Blocks a plain thread while `Inbox.limit` items wait for the loop; returns at once on any
    /// event-loop thread (blocking one could stall its I/O or deadlock with this controller) and
    /// in Swift tasks (blocking the cooperative pool could starve the very work being waited for).
    private func waitForRoom() {
        guard !EventLoop.onLoopThread, withUnsafeCurrentTask(body: { $0 == nil }) else { return }
        let semaphore = DispatchSemaphore(value: 0)
        let wait = inbox.withLock { box -> Bool in
            guard box.items.count >= Inbox.limit, box.scheduled else { return false }
            box.waiting.append(semaphore)
            return true
        }
        if wait { semaphore.wait() }
    }

    /// Has the loop take everything in the inbox, batch after batch, until it is empty; only then
    /// is `scheduled` cleared, under the same lock that saw it empty. While the loop works,
    /// producers append without waking it (a wake-up is a syscall: one per dispatch when the loop
    /// keeps up, otherwise). Each visit also hands back the segments and `Pending`s the engine is
    /// done with, for reuse.
    private func scheduleDrain() {
        onEngine { [self] engine in
            var batch = WorkFIFO()
            var released: [DispatchSemaphore] = []
            while true {
                let more = inbox.withLock { box -> Bool in
                    box.pool.give(contentsOf: &engine.spentSegments)
                    if !engine.spentPendings.isEmpty {
                        box.spares += engine.spentPendings.prefix(max(0, Engine.pendingsKept - box.spares.count))
                        engine.spentPendings.removeAll(keepingCapacity: true)
                    }
                    if box.items.isEmpty {
                        box.scheduled = false
                        return false
                    }
                    swap(&batch, &box.items)
                    swap(&released, &box.waiting)  // the inbox is empty again: room for all
                    return true
                }
                for semaphore in released { semaphore.signal() }
                released.removeAll(keepingCapacity: true)
                guard more else { break }
                engine.enqueue(&batch)
            }
        }
    }

    /// The engine, on the controller's loop thread (nil once stopped).
    var engineOnLoop: Engine? { engine.withLock { $0 }?.value }

    /// Nothing waits in the inbox (the loop has taken everything dispatched so far).
    var inboxIsEmpty: Bool { inbox.withLock { $0.items.isEmpty } }

    // MARK: Awaiting events

    /// Waits for the next dispatch of `event` (from now on) and returns its session.
    public func next(_ event: String, timeout: Duration? = nil) async throws -> Session {
        guard let bound = engine.withLock({ $0 }) else { throw ControllerError(.shutDown, "the controller '\(name)' is shut down") }
        let loop = self.loop
        let name = self.name
        return try await withCheckedThrowingContinuation { (c: CheckedContinuation<Session, any Error>) in
            let queued = (try? loop.execute {
                let engine = bound.value
                if engine.stopped {
                    c.resume(throwing: ControllerError(.shutDown, "the controller '\(name)' is shut down"))
                    return
                }
                engine.nextWaiterID += 1
                let id = engine.nextWaiterID
                engine.nextWaiters[event, default: []].append((id, c))
                if let timeout {
                    loop.scheduleTimer(afterNanos: timeout.wholeNanoseconds) {
                        guard var list = engine.nextWaiters[event], let i = list.firstIndex(where: { $0.id == id }) else { return }
                        let w = list.remove(at: i)
                        engine.nextWaiters[event] = list.isEmpty ? nil : list
                        w.waiter.resume(throwing: ControllerError(.timedOut, "no '\(event)' event within \(timeout)"))
                    }
                }
            }) != nil
            if !queued { c.resume(throwing: ControllerError(.shutDown, "the controller '\(name)' is shut down")) }
        }
    }

    // MARK: Listening

    /// Makes events dispatched to `other` also reach this controller's handlers, with the same
    /// payload and context. `allow` limits which event names are forwarded (nil: all). Forwarded
    /// events are not forwarded again, so listeners can never loop.
    public func listen(to other: Controller, allow: [String]? = nil) {
        other.listeners.withLock { $0.append((self, allow.map(Set.init))) }
        other.listenerCount.add(1, ordering: .releasing)
    }

    /// Stops listening to `other`.
    public func stopListening(to other: Controller) {
        let removed = other.listeners.withLock { list -> Int in
            let before = list.count
            list.removeAll { $0.controller === self }
            return before - list.count
        }
        other.listenerCount.subtract(removed, ordering: .releasing)
    }

    static let forwardedKey = "controller.forwardedFrom"

    private func forward(_ event: String, _ payload: any Sendable, _ context: [String: any Sendable]) {
        guard listenerCount.load(ordering: .acquiring) > 0, context[Self.forwardedKey] == nil else { return }
        let targets = listeners.withLock { $0 }
        guard !targets.isEmpty else { return }
        var forwarded = context
        forwarded[Self.forwardedKey] = name
        for t in targets where t.allow?.contains(event) ?? true {
            t.controller.dispatch(event, payload, context: forwarded)
        }
    }

    // MARK: Stopping

    /// Stops accepting work; everything queued before the call still runs, then the loop ends and
    /// `stopped` is emitted. `dispatch`/`submit` afterwards fail with `shutDown`.
    public func shutdown() {
        guard accepting.exchange(false, ordering: .acquiringAndReleasing) else { return }
        inbox.withLock { $0.closed = true }
        onEngine { $0.requestStop() }
    }

    /// Suspends until the controller has stopped.
    public func stopped() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let done = stoppedSignal.withLock { s -> Bool in
                if !s.done { s.waiters.append(c) }
                return s.done
            }
            if done { c.resume() }
        }
    }

    /// Blocks until the controller has stopped (EventDriven's `wait`). Not on its own thread.
    @available(*, noasync, message: "use 'await controller.stopped()' in async code")
    public func wait() throws {
        if loop.inEventLoop {
            throw ControllerError(.wouldDeadlock, "Controller.wait() on the controller's own thread would never return")
        }
        while !stoppedSignal.withLock({ $0.done }) { usleep(1_000) }
    }

    /// Called on the loop once the engine has stopped.
    func didStop() {
        accepting.store(false, ordering: .releasing)
        // Work queued while the loop was stopping never reaches the engine: fail it, and let go of
        // any thread waiting for room.
        var (left, waiting) = inbox.withLock { box -> (WorkFIFO, [DispatchSemaphore]) in
            box.closed = true
            defer { box.items = WorkFIFO(); box.waiting = [] }
            return (box.items, box.waiting)
        }
        var scrap = SegmentPool()
        let error = ControllerError(.shutDown, "the controller '\(name)' stopped")
        while let work = left.popFirst(pool: &scrap) { work.fail(error) }
        for semaphore in waiting { semaphore.signal() }
        let waiters = stoppedSignal.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.done = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume() }
        engine.withLock { $0 = nil }  // breaks the controller <-> engine cycle
        if ownsLoop { loop.stop() }
    }
}
