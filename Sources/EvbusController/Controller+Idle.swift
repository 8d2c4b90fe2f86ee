extension Controller {
    /// A `Pending` resolved once everything dispatched or submitted to this controller before the
    /// call (by any thread, as the controller queued it) has finished, async handlers included.
    /// On a controller that is shutting down it resolves when the controller has stopped.
    public func pending() -> Pending<Void> {
        let done = Pending<Void>(loop: loop)
        barrier { _ in true }.whenResolved { done.resolve(.success(())) }
        return done
    }

    /// Suspends until the controller has nothing queued and nothing running: what was dispatched
    /// before the call has finished, and so has what that work dispatched in turn. Returns at
    /// once on a stopped controller. Work that keeps arriving keeps it waiting.
    public func idle() async {
        while true {
            let quiet = (try? await barrier { [self] engine in engine.isQuiet && inboxIsEmpty }.value) ?? true
            if quiet { return }
        }
    }

    /// Queues `check` in order with dispatches; the Pending gets its answer, or true once the
    /// controller has stopped when it is shutting down (then nothing is outstanding any more).
    private func barrier(_ check: @escaping @Sendable (Engine) -> Bool) -> Pending<Bool> {
        let answer = Pending<Bool>(loop: loop)
        // Shutting down: the work queued before still runs; it is all finished once the loop stops.
        let afterStop: @Sendable (ControllerError) -> Void = { [self] _ in
            Task {
                await stopped()
                answer.resolve(.success(true))
            }
        }
        let queued = enqueueChange(cancel: afterStop) { engine in answer.resolve(.success(check(engine))) }
        if !queued { afterStop(shutDownError) }
        return answer
    }
}
