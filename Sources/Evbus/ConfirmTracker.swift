import EvbusWire

/// Publisher confirms on one peer connection: how far the broker has answered, which sequences it
/// refused, and who waits for which. Loop-bound. Its methods return the waiters to resume rather
/// than resuming them, so no access to it is open while a waiter runs.
struct ConfirmTracker {
    typealias Waiter = CheckedContinuation<Void, any Error>

    /// Every sequence up to this one has been answered.
    private(set) var confirmedThrough: UInt64 = 0
    private var nacked: [UInt64] = []
    private var waiters: [(through: UInt64, waiter: Waiter)] = []

    /// A CONFIRM arrived.
    mutating func confirmed(_ sequence: UInt64, flags: UInt8) -> [(Waiter, Result<Void, EvbusError>)] {
        if flags & AckFlag.nack != 0 { nacked.append(sequence) }
        confirmedThrough = max(confirmedThrough, sequence)
        let ready = waiters.filter { $0.through <= confirmedThrough }
        waiters.removeAll { $0.through <= confirmedThrough }
        return ready.map { ($0.waiter, outcome(through: $0.through)) }
    }

    /// Waits for every confirmed publish up to `through`; returns the outcome now if it is known.
    mutating func wait(through: UInt64, _ waiter: Waiter) -> Result<Void, EvbusError>? {
        if confirmedThrough >= through { return outcome(through: through) }
        waiters.append((through, waiter))
        return nil
    }

    /// Empties the waiting list (the connection ended).
    mutating func takeWaiters() -> [Waiter] {
        defer { waiters.removeAll() }
        return waiters.map(\.waiter)
    }

    /// Success, or `nacked` naming the refused sequences up to `through` (which are then forgotten).
    private mutating func outcome(through: UInt64) -> Result<Void, EvbusError> {
        let refused = nacked.filter { $0 <= through }
        nacked.removeAll { $0 <= through }
        if refused.isEmpty { return .success(()) }
        return .failure(EvbusError(.nacked,
            "the broker refused \(refused.count) confirmed publish(es) (sequence \(refused.map(String.init).joined(separator: ", ")))"))
    }
}
