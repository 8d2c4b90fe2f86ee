import EvbusIO
import Synchronization

/// A timer whose body runs on a controller's thread, queued in order with its other work
/// (EventDriven's Timer adapter). Change its interval or stop it from any thread.
public final class ControllerTimer: Sendable {
    private let controller: Controller
    private let body: @Sendable (Session) throws -> Void
    private let repeats: Bool
    private let timer = Mutex<TimerID?>(nil)
    private let stopped = Atomic<Bool>(false)

    init(controller: Controller, delay: Duration, repeats: Bool, body: @escaping @Sendable (Session) throws -> Void) {
        self.controller = controller
        self.body = body
        self.repeats = repeats
        arm(delay)
    }

    private func arm(_ interval: Duration) {
        let loop = controller.loop
        // Once the controller's loop has stopped, no timer can run: nothing to arm.
        try? loop.execute { [self] in
            guard !stopped.load(ordering: .relaxed) else { return }
            if let old = timer.withLock({ $0 }) { loop.cancelTimer(old) }
            let id = loop.scheduleTimer(afterNanos: interval.wholeNanoseconds, everyNanos: repeats ? interval.wholeNanoseconds : nil) { [self] in
                guard !stopped.load(ordering: .relaxed) else { return }
                if !repeats { stopped.store(true, ordering: .relaxed) }
                controller.submit { session in try self.body(session) }
            }
            timer.withLock { $0 = id }
        }
    }

    /// Changes the interval (the next run is `interval` from now); nil stops the timer, like
    /// EventDriven's `set_timing(None)`.
    public func setInterval(_ interval: Duration?) {
        guard let interval else { return stop() }
        arm(interval)
    }

    /// Stops the timer; a run already queued on the controller still happens.
    public func stop() {
        stopped.store(true, ordering: .relaxed)
        let loop = controller.loop
        try? loop.execute { [self] in
            if let id = timer.withLock({ $0 }) { loop.cancelTimer(id) }
        }
    }
}

extension Controller {
    /// Runs `body` on the controller every `interval` (first run after one interval).
    @discardableResult
    public func every(_ interval: Duration, _ body: @escaping @Sendable (Session) throws -> Void) -> ControllerTimer {
        ControllerTimer(controller: self, delay: interval, repeats: true, body: body)
    }

    /// Runs `body` on the controller once, after `delay`.
    @discardableResult
    public func after(_ delay: Duration, _ body: @escaping @Sendable (Session) throws -> Void) -> ControllerTimer {
        ControllerTimer(controller: self, delay: delay, repeats: false, body: body)
    }
}
