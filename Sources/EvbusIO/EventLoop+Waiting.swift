import Dispatch
import Synchronization

extension EventLoop {
    /// Runs `body` on the loop and blocks the calling thread until it returns (never call it on the
    /// loop itself: that would wait forever, so it traps instead). Blocking, so not for async code.
    /// - Throws: what `body` throws, or `EventLoopError.stopped` if the loop has stopped.
    @available(*, noasync, message: "blocks its thread; use the loop's executor or a continuation from async code")
    public func runAndWait<T: Sendable>(_ body: @escaping @Sendable () throws -> T) throws -> T {
        precondition(!inEventLoop, "runAndWait called on its own event loop would deadlock")
        let done = DispatchSemaphore(value: 0)
        let result = Mutex<Result<T, any Error>?>(nil)
        try execute {
            let r = Result { try body() }
            result.withLock { $0 = r }
            done.signal()
        }
        done.wait()
        return try result.withLock { $0! }.get()
    }

    /// Runs `body` on the loop and returns its result, suspending (not blocking) the caller: the
    /// async counterpart of `runAndWait`.
    /// - Throws: what `body` throws, or `EventLoopError.stopped` if the loop has stopped.
    public func submit<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
            do {
                try execute { c.resume(with: Result { try body() }) }
            } catch {
                c.resume(throwing: error)
            }
        }
    }
}
