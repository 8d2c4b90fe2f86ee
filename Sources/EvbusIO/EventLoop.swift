import CEvbusLinux
import Glibc
import Synchronization
import Dispatch

/// Something registered with an event loop that reacts to epoll readiness. Called on the loop thread only.
public protocol Selectable: AnyObject {
    func ready(_ events: UInt32)
}

/// An epoll reactor on one thread: sockets, one eventfd for cross-thread wake-ups, one timerfd for all timers.
///
/// Everything registered with a loop (channels, listeners, timers, deferred work) is touched only on its
/// thread; `execute` is the one door in from other threads. After each `epoll_wait` the loop handles the
/// ready fds, runs submitted tasks and deferred work, then flushes every channel written during that
/// iteration, so many frames leave in one `sendmsg`.
///
/// Stopping: once `run` returns, the loop is stopped for good. Work queued before the stop still
/// runs (on the loop thread, as the loop ends); work handed to it afterwards is refused with
/// `EventLoopError.stopped`, and Swift concurrency jobs, which cannot be refused, run at once on the
/// thread that enqueued them, as jobs of the global executor, so nothing handed to a loop waits forever.
///
/// `@unchecked Sendable` proof: the only state other threads touch is `tasks` (a `Mutex`),
/// `threadID` and `idleSpinNanos` (`Atomic`s) and the eventfd (`write(2)` is thread-safe). Every
/// other stored property is read and written only on the loop thread: the methods touching them
/// are documented "loop thread only" and check it with `assertInLoop()` in debug builds.
public final class EventLoop: @unchecked Sendable {
    let epfd: Int32
    let wakeFD: Int32
    let timerFD: Int32

    private let tasks = Mutex<TaskQueue>(TaskQueue())
    private let threadID = Atomic<UInt>(0)
    private let thread = Mutex<pthread_t?>(nil)
    private let idleSpinNanos = Atomic<Int64>(0)

    // Loop-thread state, touched on the loop thread one access at a time: dynamic exclusivity
    // checks on it are off (they showed in every profile of the request path).
    @exclusivity(unchecked) private var running = false
    @exclusivity(unchecked) private var slots: [Slot] = []
    private var freeSlots: [Int] = []
    @exclusivity(unchecked) private var deferred: [() -> Void] = []
    /// Spare arrays swapped with `tasks`, `deferred` and `dirty` so that taking a batch never
    /// copies or allocates (taking a copy and emptying the original would reallocate it every time).
    @exclusivity(unchecked) private var taskBatch: [LoopWork] = []
    @exclusivity(unchecked) private var deferredBatch: [() -> Void] = []
    @exclusivity(unchecked) private var dirtyBatch: [Channel] = []
    /// Tasks were queued from the loop thread: run them before blocking again (loop thread only).
    @exclusivity(unchecked) private var localTasksPending = false
    @exclusivity(unchecked) var dirty: [Channel] = []
    var timers = TimerHeap()
    private let events: UnsafeMutablePointer<epoll_event>
    private static let maxEvents = 256

    /// Reused by every channel on this loop for reads (channels keep only partial frames).
    var readBuffer: UnsafeMutableRawBufferPointer
    /// Reused for gathering writes.
    let iovecs: UnsafeMutableBufferPointer<iovec>

    private struct Slot {
        var handler: (any Selectable)?
        var generation: UInt32
    }

    private static let wakeToken = UInt64.max
    private static let timerToken = UInt64.max - 1

    public init() throws(IOError) {
        epfd = try syscallNoWait("epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) }
        wakeFD = try syscallNoWait("eventfd") { eventfd(0, CEvbus_EFD_NONBLOCK | CEvbus_EFD_CLOEXEC) }
        timerFD = try syscallNoWait("timerfd_create") {
            timerfd_create(CLOCK_MONOTONIC, CEvbus_TFD_NONBLOCK | CEvbus_TFD_CLOEXEC)
        }
        events = .allocate(capacity: Self.maxEvents)
        readBuffer = .allocate(byteCount: 256 * 1024, alignment: 16)
        iovecs = .allocate(capacity: 64)
        // Edge-triggered: every write to an eventfd raises a new edge, so the loop never needs to
        // read the counter back (one system call less per cross-thread wake-up). The counter
        // only grows by one per wake-up; it would take 2^64 of them to fill.
        try addToEpoll(wakeFD, token: Self.wakeToken, edgeTriggered: true)
        try addToEpoll(timerFD, token: Self.timerToken)
    }

    deinit {
        Glibc.close(epfd)
        Glibc.close(wakeFD)
        Glibc.close(timerFD)
        events.deallocate()
        readBuffer.deallocate()
        iovecs.deallocate()
    }

    private func addToEpoll(_ fd: Int32, token: UInt64, edgeTriggered: Bool = false) throws(IOError) {
        var ev = epoll_event()
        ev.events = CEvbus_EPOLLIN | (edgeTriggered ? CEvbus_EPOLLET : 0)
        ev.data.u64 = token
        try syscallNoWait("epoll_ctl(ADD)") { epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) }
    }

    // MARK: Threads

    /// Starts a new thread running this loop and returns once it runs.
    public static func startThread(name: String) throws(IOError) -> EventLoop {
        let loop = try EventLoop()
        let started = StartFlag()
        let box = Unmanaged.passRetained(ThreadBody {
            CEvbus_setThreadName(name)
            loop.run(onStart: { started.value.store(true, ordering: .releasing) })
        }).toOpaque()
        var tid = pthread_t()
        let r = pthread_create(&tid, nil, { arg in
            Unmanaged<ThreadBody>.fromOpaque(arg!).takeRetainedValue().body()
            return nil
        }, box)
        precondition(r == 0, "pthread_create failed: \(r)")
        loop.thread.withLock { $0 = tid }
        while !started.value.load(ordering: .acquiring) { sched_yield() }
        return loop
    }

    /// True on this loop's thread.
    public var inEventLoop: Bool { threadID.load(ordering: .relaxed) == pthread_self() }

    /// True on the thread of any running event loop (code there must never block).
    public static var onLoopThread: Bool { CEvbus_isLoopThread() != 0 }

    /// The running loop's thread (`pthread_self()` there), 0 when it is not running. Lets an object
    /// remember which thread serves it without keeping the loop alive.
    public var runningThread: UInt { threadID.load(ordering: .relaxed) }

    @inline(__always)
    func assertInLoop(_ function: StaticString = #function) {
        assert(inEventLoop, "\(function) must be called on the event loop thread")
    }

    // MARK: Cross-thread work

    /// Runs `task` on the loop thread soon. Safe from any thread; wakes the loop only when no wake-up
    /// is already pending.
    /// - Throws: `EventLoopError.stopped` once the loop has stopped; `task` is then not run.
    public func execute(_ task: @escaping @Sendable () -> Void) throws(EventLoopError) {
        guard submit(.closure(task)) else { throw .stopped }
    }

    /// Runs a Swift concurrency job on the loop thread soon (what a task executor on this loop
    /// enqueues): queued as it is, with no closure allocated around it. The executor is held until
    /// the job has run. A job enqueued once the loop has stopped runs at once, on this thread, as a
    /// job of the global executor: a job cannot be refused, and its task must not wait forever.
    public func enqueue(_ job: UnownedJob, on executor: any TaskExecutor) {
        if !submit(.job(job, executor)) {
            // Run here, as a job of the global executor. Not handed to `globalConcurrentExecutor`
            // to run later: the task still prefers this loop, so the runtime would send it back
            // here at once, and the two would pass it to and fro forever on a pool thread (seen:
            // it starved the test suite's cooperative pool).
            job.runSynchronously(on: globalConcurrentExecutor.asUnownedTaskExecutor())
        }
    }

    /// Queues `work`; false when the loop has stopped.
    private func submit(_ work: LoopWork) -> Bool {
        if inEventLoop {
            // From the loop itself (a reply resuming a task on this loop, an ack draining the
            // outbox): no eventfd round trip; the loop runs it before it next blocks.
            let queued = tasks.withLock { state -> Bool in
                guard !state.stopped else { return false }
                state.queue.append(work)
                return true
            }
            if queued { localTasksPending = true }
            return queued
        }
        let (queued, wake) = tasks.withLock { state -> (Bool, Bool) in
            guard !state.stopped else { return (false, false) }
            state.queue.append(work)
            if state.wakePending { return (true, false) }
            state.wakePending = true
            return (true, true)
        }
        if wake { signalWake() }
        return queued
    }

    private func signalWake() {
        var one: UInt64 = 1
        _ = Glibc.write(wakeFD, &one, 8)
    }

    /// Runs `work` on the loop thread after the current event has been handled (loop thread only).
    /// Used where doing the work right away would re-enter the caller.
    public func deferWork(_ work: @escaping () -> Void) {
        assertInLoop()
        deferred.append(work)
    }

    /// Asks the loop to stop after the current iteration. Safe from any thread; does nothing once
    /// the loop has stopped.
    public func stop() {
        try? execute { [self] in running = false }
    }

    /// True once the loop has stopped for good (work handed to it is refused). Safe from any thread.
    public var isStopped: Bool { tasks.withLock { $0.stopped } }

    /// Stops the loop and waits for its thread (started by `startThread`) to end.
    /// Must not be called on the loop thread.
    public func stopAndJoin() {
        precondition(!inEventLoop, "stopAndJoin() on the loop's own thread would wait forever")
        stop()
        if let tid = thread.withLock({ t -> pthread_t? in defer { t = nil }; return t }) {
            pthread_join(tid, nil)
        }
    }

    // MARK: Registration (loop thread only)

    public struct Registration: Hashable, Sendable {
        let slot: Int
        let generation: UInt32
        var token: UInt64 { UInt64(slot) | UInt64(generation) << 32 }
    }

    /// Registers `fd` for `events` (CEvbus_EPOLLIN/OUT...). The handler is kept alive until deregistered.
    public func register(_ fd: Int32, events: UInt32, handler: any Selectable) throws(IOError) -> Registration {
        assertInLoop()
        let slot: Int
        if let reused = freeSlots.popLast() {
            slot = reused
            slots[slot].handler = handler
        } else {
            slot = slots.count
            slots.append(Slot(handler: handler, generation: 0))
        }
        let registration = Registration(slot: slot, generation: slots[slot].generation)
        var ev = epoll_event()
        ev.events = events
        ev.data.u64 = registration.token
        do {
            try syscallNoWait("epoll_ctl(ADD)") { epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) }
        } catch {
            release(slot)
            throw error
        }
        return registration
    }

    public func modify(_ fd: Int32, _ registration: Registration, events: UInt32) throws(IOError) {
        assertInLoop()
        var ev = epoll_event()
        ev.events = events
        ev.data.u64 = registration.token
        try syscallNoWait("epoll_ctl(MOD)") { epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) }
    }

    /// Removes `fd`; events already returned by this `epoll_wait` for it are dropped (the generation
    /// changes), even if the fd number is reused at once.
    public func deregister(_ fd: Int32, _ registration: Registration) {
        assertInLoop()
        _ = epoll_ctl(epfd, EPOLL_CTL_DEL, fd, nil)
        if slots[registration.slot].generation == registration.generation {
            release(registration.slot)
        }
    }

    private func release(_ slot: Int) {
        slots[slot].handler = nil
        slots[slot].generation &+= 1
        freeSlots.append(slot)
    }

    /// Number of live registrations (tests and stats).
    public var registrationCount: Int { slots.count - freeSlots.count }

    func markDirty(_ channel: Channel) {
        dirty.append(channel)
    }

    // MARK: The loop

    /// How long the loop keeps polling for work before it sleeps, while work keeps coming within
    /// that long of the loop going idle (zero, the default: it always sleeps at once).
    ///
    /// Waking a sleeping thread costs several microseconds (much more in a virtual machine); a loop
    /// that polls is found at once. The policy is adaptive, so the CPU spent stays small: the loop
    /// polls only after it last found work within the window (by polling, or by a sleep shorter
    /// than the window), so work arriving sporadically costs at most one window per burst, while a
    /// steady stream faster than one item per window is picked up without any wake-up. Settable
    /// from any thread; negative means zero, and more than a second means a second.
    public var idleSpin: Duration {
        get { .nanoseconds(idleSpinNanos.load(ordering: .relaxed)) }
        set {
            let clamped = min(max(newValue, .zero), .seconds(1))
            idleSpinNanos.store(clamped.components.seconds * 1_000_000_000 + clamped.components.attoseconds / 1_000_000_000, ordering: .relaxed)
        }
    }

    /// Runs the loop on the calling thread until `stop()`.
    public func run(onStart: () -> Void = {}) {
        threadID.store(pthread_self(), ordering: .relaxed)
        CEvbus_setLoopThread(1)
        defer { CEvbus_setLoopThread(0) }
        running = true
        onStart()
        var spinNext = false
        var workLeft = false
        while running {
            let n = workLeft ? epoll_wait(epfd, events, Int32(Self.maxEvents), 0) : waitForEvents(spinning: &spinNext)
            if n < 0 {
                if errno == EINTR { continue }
                fatalError("epoll_wait failed: \(IOError("epoll_wait", errno: errno))")
            }
            for i in 0..<Int(n) {
                let token = events[i].data.u64
                let mask = events[i].events
                switch token {
                case Self.wakeToken: runTasks()
                case Self.timerToken: fireTimers()
                default:
                    let slot = Int(truncatingIfNeeded: token & 0xFFFF_FFFF)
                    let generation = UInt32(truncatingIfNeeded: token >> 32)
                    guard slot < slots.count, slots[slot].generation == generation,
                        let handler = slots[slot].handler
                    else { continue }
                    handler.ready(mask)
                }
            }
            workLeft = finishIteration()
        }
        drainAtStop()
        threadID.store(0, ordering: .relaxed)
    }

    /// The loop is ending: refuse new work from now on, then run what was queued before the stop
    /// (still on the loop thread) so that nobody waits for it forever.
    private func drainAtStop() {
        while true {
            let batch = tasks.withLock { state -> [LoopWork] in
                state.stopped = true
                defer { state.queue = [] }
                return state.queue
            }
            if batch.isEmpty && deferred.isEmpty { break }
            for work in batch { run(work) }
            let work = deferred
            deferred = []
            for w in work { w() }
        }
        localTasksPending = false
        for s in dirty { s.flushFromLoop() }
        dirty = []
    }

    /// `epoll_wait`, preceded by polling when `idleSpin` says so; updates whether to poll next time.
    private func waitForEvents(spinning spinNext: inout Bool) -> Int32 {
        let window = idleSpinNanos.load(ordering: .relaxed)
        guard window > 0 else { return epoll_wait(epfd, events, Int32(Self.maxEvents), -1) }
        let idleSince = monotonicNanos()
        if spinNext {
            let deadline = idleSince + UInt64(window)
            repeat {
                let n = epoll_wait(epfd, events, Int32(Self.maxEvents), 0)
                if n != 0 { return n }
            } while monotonicNanos() < deadline
        }
        let n = epoll_wait(epfd, events, Int32(Self.maxEvents), -1)
        spinNext = monotonicNanos() - idleSince < UInt64(window)
        return n
    }

    /// How many rounds of loop-local tasks and deferred work one iteration runs before it polls
    /// for I/O and timers again (as swift-nio bounds the tasks it runs per tick). Work that keeps
    /// queueing more work then shares the thread with sockets and timers instead of starving them.
    static let maxRoundsPerIteration = 16

    /// Tasks queued from the loop thread and deferred work, each batch followed by one flush of
    /// every channel written, repeated while they add more, up to `maxRoundsPerIteration` rounds.
    /// Returns whether work is left: the next `epoll_wait` then only polls (timeout 0).
    private func finishIteration() -> Bool {
        var rounds = 0
        while !deferred.isEmpty || !dirty.isEmpty || localTasksPending {
            if rounds == Self.maxRoundsPerIteration { break }
            rounds += 1
            if localTasksPending { runLocalTasks() }
            if !deferred.isEmpty {
                swap(&deferred, &deferredBatch)
                for w in deferredBatch { w() }
                deferredBatch.removeAll(keepingCapacity: true)
            }
            flushDirty()
        }
        // Bytes written by the last round leave now, not after the next poll.
        flushDirty()
        return localTasksPending || !deferred.isEmpty || !dirty.isEmpty
    }

    private func flushDirty() {
        guard !dirty.isEmpty else { return }
        swap(&dirty, &dirtyBatch)
        for s in dirtyBatch { s.flushFromLoop() }
        dirtyBatch.removeAll(keepingCapacity: true)
    }

    private func runTasks() {
        runTaskBatch(clearingWake: true)
    }

    /// Runs tasks queued from the loop thread itself (and any others queued meanwhile), without
    /// touching the eventfd: a wake-up another thread signalled is still pending and harmless.
    private func runLocalTasks() {
        localTasksPending = false
        runTaskBatch(clearingWake: false)
    }

    private func runTaskBatch(clearingWake: Bool) {
        tasks.withLock { state in
            if clearingWake { state.wakePending = false }
            swap(&state.queue, &taskBatch)
        }
        for work in taskBatch { run(work) }
        taskBatch.removeAll(keepingCapacity: true)
    }

    @inline(__always)
    private func run(_ work: LoopWork) {
        switch work {
        case .closure(let task): task()
        case .job(let job, let executor): job.runSynchronously(on: executor.asUnownedTaskExecutor())
        }
    }

    /// Grows the shared read buffer to at least `capacity` bytes (loop thread only).
    func ensureReadCapacity(_ capacity: Int) {
        guard readBuffer.count < capacity else { return }
        let bigger = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 16)
        readBuffer.deallocate()
        readBuffer = bigger
    }
}

private final class ThreadBody {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}

/// Work submitted to a loop from any thread.
private enum LoopWork: Sendable {
    case closure(@Sendable () -> Void)
    case job(UnownedJob, any TaskExecutor)
}

/// The queue other threads hand work through (under the loop's mutex).
private struct TaskQueue {
    var queue: [LoopWork] = []
    /// The eventfd was written and the loop has not taken the queue since.
    var wakePending = false
    /// The loop has ended: nothing more is queued.
    var stopped = false
}

private final class StartFlag: Sendable {
    let value = Atomic<Bool>(false)
}
