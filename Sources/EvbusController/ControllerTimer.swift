import EvbusIO
import Synchronization

/// A timer whose body runs on a controller's thread, queued in order with its other work
/// (EventDriven's Timer adapter). Change its interval or stop it from any thread.
public final class ControllerTimer: Sendable {
    private let controller: Controller
    private let body: @Sendable (Session) throws -> Void
    private let repeats: Bool
    private let timer = Mutex<TimerID?>(nil)
    /// Each arm and each stop starts a new generation; a loop task or a firing from an older one
    /// does nothing, so a stop followed by a new interval (from any threads) never runs twice or
    /// cancels the new timer.
    private let generation = Atomic<UInt64>(0)

    init(controller: Controller, delay: Duration, repeats: Bool, body: @escaping @Sendable (Session) throws -> Void) {
        self.controller = controller
        self.body = body
        self.repeats = repeats
        arm(delay)
    }

    private func arm(_ interval: Duration) {
        let loop = controller.loop
        let mine = generation.add(1, ordering: .acquiringAndReleasing).newValue
        // Once the controller's loop has stopped, no timer can run: nothing to arm.
        try? loop.execute { [self] in
            guard generation.load(ordering: .acquiring) == mine else { return }  // stopped or re-armed since
            if let old = timer.withLock({ $0 }) { loop.cancelTimer(old) }
            let id = loop.scheduleTimer(afterNanos: interval.wholeNanoseconds, everyNanos: repeats ? interval.wholeNanoseconds : nil) { [self] in
                guard generation.load(ordering: .acquiring) == mine else { return }
                if !repeats { timer.withLock { $0 = nil } }
                controller.submit { session in try self.body(session) }
            }
            timer.withLock { $0 = id }
        }
    }

    /// Changes the interval (the next run is `interval` from now), restarting a stopped or
    /// finished timer; nil stops it, like EventDriven's `set_timing(None)`, and a later interval
    /// starts it again.
    public func setInterval(_ interval: Duration?) {
        guard let interval else { return stop() }
        arm(interval)
    }

    /// Stops the timer; a run already queued on the controller still happens.
    public func stop() {
        let mine = generation.add(1, ordering: .acquiringAndReleasing).newValue
        let loop = controller.loop
        try? loop.execute { [self] in
            guard generation.load(ordering: .acquiring) == mine else { return }  // re-armed since: keep that one
            if let id = timer.withLock({ $0 }) { loop.cancelTimer(id) }
            timer.withLock { $0 = nil }
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
