import EvbusIO
import EvbusWire

/// Publisher confirms on one peer connection: how far the broker has answered, which sequences it
/// refused, and who waits for which. Loop-bound. Its methods return the waiters to resume rather
/// than resuming them, so no access to it is open while a waiter runs.
struct ConfirmTracker {
    /// A `waitForConfirms` call: its number (to find it when it gives up), its continuation and
    /// the loop timer of its timeout.
    struct Waiter {
        let number: UInt64
        let continuation: CheckedContinuation<Void, any Error>
        let timer: TimerID?
    }

    /// Every sequence up to this one has been answered.
    private(set) var confirmedThrough: UInt64 = 0
    private var nacked: [UInt64] = []
    /// Sent on a connection that dropped before the broker answered: delivered or not, no one knows.
    private var inDoubt: [ClosedRange<UInt64>] = []
    private var waiters: [(through: UInt64, waiter: Waiter)] = []
    /// The broker numbers each connection's confirmed publishes from 1; the peer numbers them
    /// across reconnects. A CONFIRM's sequence plus `base` is the peer's number.
    private var base: UInt64 = 0

    /// A CONFIRM arrived.
    mutating func confirmed(_ wireSequence: UInt64, flags: UInt8) -> [(Waiter, Result<Void, EvbusError>)] {
        let sequence = base + wireSequence
        if flags & AckFlag.nack != 0 { nacked.append(sequence) }
        confirmedThrough = max(confirmedThrough, sequence)
        return ready()
    }

    /// The connection dropped after `sentThrough` confirmed publishes had been handed to its
    /// socket (the peer is reconnecting): those not answered are in doubt and reported so, never
    /// as confirmed; the next connection's CONFIRMs count from there.
    mutating func connectionEnded(sentThrough: UInt64) -> [(Waiter, Result<Void, EvbusError>)] {
        if sentThrough > confirmedThrough { inDoubt.append((confirmedThrough + 1)...sentThrough) }
        confirmedThrough = max(confirmedThrough, sentThrough)
        base = sentThrough
        return ready()
    }

    private mutating func ready() -> [(Waiter, Result<Void, EvbusError>)] {
        let ready = waiters.filter { $0.through <= confirmedThrough }
        waiters.removeAll { $0.through <= confirmedThrough }
        return ready.map { ($0.waiter, outcome(through: $0.through)) }
    }

    /// Waits for every confirmed publish up to `through` (`settled` said it is not known yet).
    mutating func wait(through: UInt64, _ waiter: Waiter) {
        waiters.append((through, waiter))
    }

    /// The waiter numbered `number`, no longer waiting (its timeout passed or its task was
    /// cancelled); nil if it was answered already.
    mutating func giveUp(_ number: UInt64) -> Waiter? {
        guard let i = waiters.firstIndex(where: { $0.waiter.number == number }) else { return nil }
        return waiters.remove(at: i).waiter
    }

    /// The outcome for everything up to `through` if every one has been answered (or put in doubt).
    mutating func settled(through: UInt64) -> Result<Void, EvbusError>? {
        confirmedThrough >= through ? outcome(through: through) : nil
    }

    /// Empties the waiting list (the connection ended).
    mutating func takeWaiters() -> [Waiter] {
        defer { waiters.removeAll() }
        return waiters.map(\.waiter)
    }

    /// Success, `connection-lost` naming publishes in doubt up to `through`, or `nacked` naming the
    /// refused ones (what is reported is then forgotten).
    private mutating func outcome(through: UInt64) -> Result<Void, EvbusError> {
        let doubtful = inDoubt.filter { $0.lowerBound <= through }.map { $0.clamped(to: $0.lowerBound...through) }
        if !doubtful.isEmpty {
            inDoubt = inDoubt.compactMap { $0.upperBound <= through ? nil : ($0.lowerBound > through ? $0 : (through + 1)...$0.upperBound) }
            nacked.removeAll { $0 <= through }
            let count = doubtful.reduce(0) { $0 + $1.count }
            let ranges = doubtful.map { $0.count == 1 ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }.joined(separator: ", ")
            return .failure(EvbusError(.connectionLost,
                "\(count) confirmed publish(es) (sequence \(ranges)) went out on a connection that dropped before the broker confirmed them: they may or may not have been routed"))
        }
        let refused = nacked.filter { $0 <= through }
        nacked.removeAll { $0 <= through }
        if refused.isEmpty { return .success(()) }
        return .failure(EvbusError(.nacked,
            "the broker refused \(refused.count) confirmed publish(es) (sequence \(refused.map(String.init).joined(separator: ", ")))"))
    }
}
