import Dispatch
import EvbusIO
import Synchronization

/// The eventual result of work handed to a controller: await it (`value`), or block for it from
/// non-async code (`wait`). Resolved exactly once, on the controller's thread.
public final class Pending<Value: Sendable>: Sendable {
    private struct State {
        var result: Result<Value, any Error>?
        var waiters: [CheckedContinuation<Value, any Error>] = []
        var blocked: [DispatchSemaphore] = []
        var callbacks: [@Sendable () -> Void] = []
    }

    private let state = Mutex(State())
    /// The loop that resolves it: blocking on that thread would never return.
    private let loop: EventLoop?

    init(loop: EventLoop?) { self.loop = loop }

    /// An already-failed pending (work refused before it was queued).
    static func failed(_ error: any Error) -> Pending {
        let p = Pending(loop: nil)
        p.resolve(.failure(error))
        return p
    }

    /// True once a result is in.
    public var isResolved: Bool { state.withLock { $0.result != nil } }

    /// The result, suspending until it is in; rethrows the work's error.
    public var value: Value {
        get async throws {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Value, any Error>) in
                let ready = state.withLock { s -> Result<Value, any Error>? in
                    if let r = s.result { return r }
                    s.waiters.append(c)
                    return nil
                }
                if let ready { c.resume(with: ready) }
            }
        }
    }

    /// Blocks the calling thread until the result is in (or `timeout` passes). For non-async code.
    /// - Throws: the work's error; `timedOut`; `wouldDeadlock` when called on the controller's own
    ///   thread (the result could never arrive).
    @available(*, noasync, message: "use 'await pending.value' in async code")
    public func wait(timeout: Duration? = nil) throws -> Value {
        if let loop, loop.inEventLoop {
            throw ControllerError(.wouldDeadlock, "Pending.wait() on the controller's own thread would never return; use it from another thread, or `await value`")
        }
        let semaphore = DispatchSemaphore(value: 0)
        if let ready = state.withLock({ s -> Result<Value, any Error>? in
            if s.result == nil { s.blocked.append(semaphore) }
            return s.result
        }) {
            return try ready.get()
        }
        let deadline: DispatchTime = timeout.map { .now() + .nanoseconds(Int($0.wholeNanoseconds)) } ?? .distantFuture
        if semaphore.wait(timeout: deadline) == .timedOut {
            if let late = state.withLock({ $0.result }) { return try late.get() }
            throw ControllerError(.timedOut, "no result within \(timeout!)")
        }
        return try state.withLock { $0.result! }.get()
    }

    /// Runs `callback` once the result is in (at once if it already is), on the resolving thread.
    func whenResolved(_ callback: @escaping @Sendable () -> Void) {
        let now = state.withLock { s -> Bool in
            if s.result != nil { return true }
            s.callbacks.append(callback)
            return false
        }
        if now { callback() }
    }

    func resolve(_ result: Result<Value, any Error>) {
        var waiters: [CheckedContinuation<Value, any Error>] = []
        var blocked: [DispatchSemaphore] = []
        var callbacks: [@Sendable () -> Void] = []
        state.withLock { s in
            guard s.result == nil else { return }
            s.result = result
            swap(&waiters, &s.waiters)
            swap(&blocked, &s.blocked)
            swap(&callbacks, &s.callbacks)
        }
        for w in waiters { w.resume(with: result) }
        for b in blocked { b.signal() }
        for c in callbacks { c() }
    }
}
