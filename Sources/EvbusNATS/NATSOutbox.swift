import Synchronization

/// Publishes made on any thread, waiting for the client's thread to write them to the socket.
/// A publisher appends its frame under a lock and only the first frame of a batch wakes the
/// client's thread, so a fast publisher costs one loop job per batch, not one per message.
/// Publishers wait (`mustWait`) while the socket is backed up or a batch grows past `limit`.
final class NATSOutbox: Sendable {
    struct State {
        var bytes: [UInt8] = []
        /// The last batch's buffer, kept for its capacity.
        var spare: [UInt8] = []
        var drainQueued = false
        /// Connected (CONNECT sent): publishes are accepted.
        var open = false
        var closed = false
        /// The socket's queue passed its high watermark and has not drained yet.
        var backedUp = false
        /// The connected server's `max_payload`: a larger message is refused, not sent.
        var maxPayload = Int.max
        var waiters: [CheckedContinuation<Void, Never>] = []

        var full: Bool { backedUp || bytes.count >= NATSOutbox.limit }
    }

    static let limit = 1 << 20
    private let state = Mutex(State())

    /// Appends what `encode` writes, a message of `size` bytes (headers and payload). Returns
    /// whether the caller must wake the client's thread (`drain`), and whether it should wait
    /// before publishing more.
    func append(size: Int, _ encode: (inout [UInt8]) -> Void) throws(NATSError) -> (wake: Bool, mustWait: Bool) {
        try state.withLock { (s: inout State) throws(NATSError) -> (wake: Bool, mustWait: Bool) in
            guard s.open else {
                throw NATSError(s.closed ? .closed : .notConnected, s.closed ? "the NATS client is closed" : "not connected to a NATS server")
            }
            try NATSOutbox.check(size: size, maxPayload: s.maxPayload)
            let before = s.bytes.count
            encode(&s.bytes)
            let wake = before == 0 && !s.drainQueued
            if wake { s.drainQueued = true }
            return (wake, s.full)
        }
    }

    /// Refuses a message the server would close the connection for.
    static func check(size: Int, maxPayload: Int) throws(NATSError) {
        guard size <= maxPayload else {
            throw NATSError(.payloadTooLarge, "a message of \(size) bytes (headers and payload) is larger than the server's max_payload, \(maxPayload) bytes")
        }
    }

    var isFull: Bool { state.withLock { $0.full } }
    var isOpen: Bool { state.withLock { $0.open } }

    /// Suspends until publishers may go on (at once if they may already).
    func waitUntilRoom() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { s in
                if s.full && s.open { s.waiters.append(c); return false }
                return true
            }
            if ready { c.resume() }
        }
    }

    /// Client's thread: hands the queued bytes to `write` (which copies them) and keeps the
    /// buffer for reuse. True when this ended a full spell (see `drained`).
    func drain(_ write: ([UInt8]) -> Void) -> Bool {
        var (batch, wasFull) = state.withLock { s in
            let wasFull = s.full
            s.drainQueued = false
            var b: [UInt8] = []
            swap(&b, &s.bytes)
            swap(&s.bytes, &s.spare)
            return (b, wasFull)
        }
        guard !batch.isEmpty else { return false }
        write(batch)
        batch.removeAll(keepingCapacity: true)
        return state.withLock { s in
            s.spare = batch
            return wasFull && !s.full
        }
    }

    /// Client's thread: the socket is (not) backed up; publishers waiting may go on once it
    /// drained. True when this ended a full spell.
    @discardableResult
    func setBackedUp(_ backedUp: Bool) -> Bool {
        let (waiters, ended) = state.withLock { s in
            let wasFull = s.full
            s.backedUp = backedUp
            return (s.full ? [] : s.takeWaiters(), wasFull && !s.full)
        }
        resume(waiters)
        return ended
    }

    /// Client's thread: connected (publishes accepted, up to the server's `maxPayload`), or not
    /// (queued bytes are discarded, as bytes in a lost socket's buffer are; waiting publishers
    /// go on and then fail). True when this ended a full spell.
    @discardableResult
    func setOpen(_ open: Bool, maxPayload: Int = .max, closed: Bool = false) -> Bool {
        let (waiters, ended) = state.withLock { s in
            let wasFull = s.full
            s.open = open
            s.maxPayload = maxPayload
            s.closed = s.closed || closed
            s.backedUp = false
            if !open { s.bytes.removeAll(keepingCapacity: true) }
            return (s.takeWaiters(), wasFull && !s.full)
        }
        resume(waiters)
        return ended
    }

    private func resume(_ waiters: [CheckedContinuation<Void, Never>]) {
        for w in waiters { w.resume() }
    }
}

extension NATSOutbox.State {
    mutating func takeWaiters() -> [CheckedContinuation<Void, Never>] {
        defer { waiters = [] }
        return waiters
    }
}
