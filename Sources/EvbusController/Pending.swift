import Dispatch
import Glibc
import EvbusIO
import Synchronization

/// The eventual result of work handed to a controller: await it (`value`), or block for it from
/// non-async code (`wait`). Resolved exactly once, on the controller's thread.
public final class Pending<Value: Sendable>: Sendable {
    private let state = Mutex(PendingState())
    /// The thread of the loop that resolves it (0: none): blocking there would never return. A
    /// thread id, not the loop, so that creating and dropping a Pending on different threads does
    /// not bounce the loop's reference count between them on every dispatch.
    private let resolverThread: UInt

    init(loop: EventLoop?) { resolverThread = loop?.runningThread ?? 0 }

    /// An already-failed pending (work refused before it was queued).
    static func failed(_ error: any Error) -> Pending {
        let p = Pending(loop: nil)
        p.resolve(.failure(error))
        return p
    }

    /// True once a result is in.
    public var isResolved: Bool { state.withLock { $0.resolved } }

    /// The result, suspending until it is in; rethrows the work's error.
    public var value: Value {
        get async throws {
            let erased = try await withCheckedThrowingContinuation { (c: CheckedContinuation<any Sendable, any Error>) in
                let ready = state.withLock { s -> Result<any Sendable, any Error>? in
                    if let r = s.result { return r }
                    s.waiters.append(.task(c))
                    return nil
                }
                if let ready { c.resume(with: ready) }
            }
            return erased as! Value  // only `resolve` stores results, and it stores `Value`s
        }
    }

    /// Blocks the calling thread until the result is in (or `timeout` passes). For non-async code.
    /// - Throws: the work's error; `timedOut`; `wouldDeadlock` when called on the controller's own
    ///   thread (the result could never arrive).
    @available(*, noasync, message: "use 'await pending.value' in async code")
    public func wait(timeout: Duration? = nil) throws -> Value {
        if resolverThread != 0 && resolverThread == pthread_self() && !isResolved {
            throw ControllerError(.wouldDeadlock, "Pending.wait() on the controller's own thread would never return; use it from another thread, or `await value`")
        }
        let semaphore = DispatchSemaphore(value: 0)
        if let ready = state.withLock({ s -> Result<any Sendable, any Error>? in
            if !s.resolved { s.waiters.append(.thread(semaphore)) }
            return s.result
        }) {
            return try ready.get() as! Value
        }
        let deadline: DispatchTime = timeout.map { .now() + .nanoseconds(Int($0.wholeNanoseconds)) } ?? .distantFuture
        if semaphore.wait(timeout: deadline) == .timedOut {
            if let late = state.withLock({ $0.result }) { return try late.get() as! Value }
            throw ControllerError(.timedOut, "no result within \(timeout!)")
        }
        return try state.withLock { $0.result! }.get() as! Value
    }

    /// Makes a resolved Pending unresolved again, for reuse. Only for one nobody else references.
    func reset() {
        state.withLock { $0 = PendingState() }
    }

    /// Runs `callback` once the result is in (at once if it already is), on the resolving thread.
    func whenResolved(_ callback: @escaping @Sendable () -> Void) {
        let now = state.withLock { s -> Bool in
            if s.resolved { return true }
            s.waiters.append(.callback(callback))
            return false
        }
        if now { callback() }
    }

    func resolve(_ result: Result<Value, any Error>) {
        var waiters: [PendingState.Waiter] = []
        let first = state.withLock { s -> Bool in
            guard !s.resolved else { return false }
            switch result {
            case .success(let value): s.value = value
            case .failure(let error): s.error = error
            }
            s.resolved = true
            swap(&waiters, &s.waiters)
            return true
        }
        guard first, !waiters.isEmpty else { return }
        let erased = result.map { $0 as any Sendable }
        for w in waiters {
            switch w {
            case .task(let c): c.resume(with: erased)
            case .thread(let semaphore): semaphore.signal()
            case .callback(let callback): callback()
            }
        }
    }
}

/// A Pending's state. Deliberately not generic (and not nested in the generic class, which would
/// make it generic): a Pending is released once per dispatch, and the unspecialized deinit of a
/// generic state looked up its type metadata in the runtime's cache every time (~8% of a
/// dispatch-heavy profile). The value is stored type-erased; `Pending` casts it back. Value and
/// error are separate optionals rather than a `Result`, whose copies went through the runtime's
/// multi-payload enum witnesses.
private struct PendingState {
    enum Waiter {
        case task(CheckedContinuation<any Sendable, any Error>)
        case thread(DispatchSemaphore)
        case callback(@Sendable () -> Void)
    }

    var resolved = false
    var value: (any Sendable)?
    var error: (any Error)?
    var waiters: [Waiter] = []

    /// The outcome, once resolved.
    var result: Result<any Sendable, any Error>? {
        guard resolved else { return nil }
        if let error { return .failure(error) }
        return .success(value!)
    }
}
