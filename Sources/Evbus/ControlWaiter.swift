import EvbusIO

/// A caller waiting for the broker's answer to a control request: declare, delete, bind, purge,
/// subscribe, consume, cancel, flush, stats, topology, connections. It is resumed once: with the
/// outcome, or earlier, when its time (`Peer.Options.controlTimeout`) runs out or its task is
/// cancelled. Giving up takes nothing back: the request was sent and the broker may still carry
/// it out. The reply's handler runs all the same and reads `gaveUp`, to remember what was done
/// (a declaration is made again after a reconnect) or to undo what no one holds (a subscription
/// or consumer the caller never got). Loop-bound.
final class ControlWaiter<T: Sendable>: GivingUp {
    let number: UInt64
    private var continuation: CheckedContinuation<T, any Error>?
    private var timer: TimerID?
    private let table: ControlWaiters
    /// Set once the caller has been answered with its timeout or `CancellationError`.
    private(set) var gaveUp = false
    /// Runs when the caller gives up, for what must stop at once: a subscription's or
    /// consumer's sink that no one will read (a full one would stop the connection's reads).
    var onGiveUp: (() -> Void)?

    fileprivate init(number: UInt64, _ continuation: CheckedContinuation<T, any Error>, table: ControlWaiters, timer: TimerID?) {
        self.number = number
        self.continuation = continuation
        self.table = table
        self.timer = timer
    }

    /// The outcome; nothing if the caller gave up already.
    func resume(with result: Result<T, any Error>) {
        guard let continuation else { return }
        self.continuation = nil
        onGiveUp = nil
        table.ended(self)
        continuation.resume(with: result)
    }

    func resume(returning value: T) { resume(with: .success(value)) }

    func resume(throwing error: any Error) { resume(with: .failure(error)) }

    func giveUp(_ error: any Error) {
        guard continuation != nil else { return }
        gaveUp = true
        let undo = onGiveUp
        resume(with: .failure(error))
        undo?()
    }

    fileprivate func takeTimer() -> TimerID? {
        defer { timer = nil }
        return timer
    }
}

extension ControlWaiter where T == Void {
    func resume() { resume(with: .success(())) }
}

/// What the table of waiters can do to one whatever it waits for.
protocol GivingUp: AnyObject {
    func giveUp(_ error: any Error)
}

/// The connection's control waiters by number, so a cancelled task's can be found from outside
/// the loop (`Peer` numbers them). Each has a timer for its deadline. Loop-bound.
final class ControlWaiters {
    let loop: EventLoop
    /// How long a caller waits for the broker before `timeout`.
    let timeout: Duration
    private var waiting: [UInt64: any GivingUp] = [:]

    init(loop: EventLoop, timeout: Duration) {
        self.loop = loop
        self.timeout = timeout
    }

    /// A waiter for a caller asking `what` (a frame's name, for the timeout's message).
    func make<T>(_ number: UInt64, _ continuation: CheckedContinuation<T, any Error>, asking what: String) -> ControlWaiter<T> {
        let timeout = self.timeout
        let timer = loop.scheduleTimer(afterNanos: timeout.wholeNanoseconds) { [weak self] in
            self?.giveUp(number, EvbusError(.timeout, "the broker did not answer \(what) within \(timeout); it may still carry it out"))
        }
        let waiter = ControlWaiter(number: number, continuation, table: self, timer: timer)
        waiting[number] = waiter
        return waiter
    }

    /// The caller of waiter `number` stops waiting (its timeout, or `CancellationError`), if it
    /// still waits.
    func giveUp(_ number: UInt64, _ error: any Error) {
        waiting[number]?.giveUp(error)
    }

    fileprivate func ended<T>(_ waiter: ControlWaiter<T>) {
        waiting[waiter.number] = nil
        if let timer = waiter.takeTimer() { loop.cancelTimer(timer) }
    }
}
