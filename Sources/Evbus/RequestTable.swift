import EvbusIO
import EvbusWire

/// The peer's requests in flight, by call number (the correlation id is `r<number>`). Loop-bound:
/// the peer connection feeds it ROUTED counts, replies from the inbox and responder-gone notices;
/// calls register and time out here.
///
/// The continuations are unsafe (unchecked) ones: every path resumes a call only after removing it
/// from `calls`, on the loop thread, so each is resumed exactly once.
final class RequestTable {
    struct Call {
        /// One reply (`request`) or all of them (`requestAll`).
        enum Waiter {
            case one(UnsafeContinuation<Reply, any Error>)
            case all(UnsafeContinuation<[Reply], any Error>)
        }
        let waiter: Waiter
        /// How long it may take (for the timeout's message).
        var limit: Duration = .zero
        /// Responders the broker reached (from ROUTED); nil until it says.
        var expected: Int?
        var replies: [Reply] = []
        init(_ waiter: Waiter) { self.waiter = waiter }
    }

    // Loop-bound, one access at a time: no dynamic exclusivity checks (hot on every call).
    @exclusivity(unchecked) private var calls: [UInt64: Call] = [:]
    /// Replies that came after their call timed out (or for ids never issued): discarded.
    private(set) var lateReplies = 0
    /// Every call's deadline (monotonic ns), in deadline order. One loop timer serves them all,
    /// armed for the earliest; entries of finished calls are dropped from the front as they finish.
    /// Touched for every call, like `calls` (and unchecked for the same reason).
    @exclusivity(unchecked) private var deadlines: [(at: UInt64, id: UInt64)] = []
    @exclusivity(unchecked) private var deadlinesHead = 0
    @exclusivity(unchecked) private var timer: TimerID?
    @exclusivity(unchecked) private var armedAt: UInt64 = 0

    var count: Int { calls.count }

    func add(_ id: UInt64, _ call: Call, timeout: Duration, loop: EventLoop) {
        var call = call
        call.limit = timeout
        calls[id] = call
        let at = monotonicNanos() &+ timeout.wholeNanoseconds
        if deadlinesHead == deadlines.count || at >= deadlines[deadlines.count - 1].at {
            deadlines.append((at, id))  // the usual case: one timeout for every call
        } else {
            var low = deadlinesHead, high = deadlines.count
            while low < high {
                let mid = (low + high) / 2
                if deadlines[mid].at <= at { low = mid + 1 } else { high = mid }
            }
            deadlines.insert((at, id), at: low)
        }
        if timer == nil || at < armedAt { arm(at, loop: loop) }
        compactIfMostlyFinished()
    }

    /// Deadline entries kept (finished calls' entries included, until they are dropped).
    var deadlineEntries: Int { deadlines.count - deadlinesHead }

    /// Entries of finished calls are dropped from the front only, so one slow call at the front
    /// (a long timeout, a hung responder) would let every later call's entry pile up behind it.
    /// When most entries are finished, keep only the live ones: amortised O(1) per call.
    private func compactIfMostlyFinished() {
        guard deadlineEntries > 2 * calls.count + 1024 else { return }
        deadlines = deadlines[deadlinesHead...].filter { calls[$0.id] != nil }
        deadlinesHead = 0
    }

    private func arm(_ at: UInt64, loop: EventLoop) {
        if let timer { loop.cancelTimer(timer) }
        armedAt = at
        let now = monotonicNanos()
        timer = loop.scheduleTimer(afterNanos: at > now ? at - now : 0) { [self] in deadlinePassed(loop: loop) }
    }

    private func deadlinePassed(loop: EventLoop) {
        timer = nil
        let now = monotonicNanos()
        while deadlinesHead < deadlines.count && deadlines[deadlinesHead].at <= now {
            let id = deadlines[deadlinesHead].id
            deadlinesHead += 1
            if let call = calls[id] { expire(id, after: call.limit, loop: loop) }
        }
        dropFinished()
        if deadlinesHead < deadlines.count { arm(deadlines[deadlinesHead].at, loop: loop) }
    }

    /// Drops deadlines of calls that already finished from the front, and compacts now and then.
    private func dropFinished() {
        while deadlinesHead < deadlines.count && calls[deadlines[deadlinesHead].id] == nil { deadlinesHead += 1 }
        if deadlinesHead == deadlines.count {
            deadlines.removeAll(keepingCapacity: true)
            deadlinesHead = 0
        } else if deadlinesHead >= 1024 && deadlinesHead * 2 >= deadlines.count {
            deadlines.removeFirst(deadlinesHead)
            deadlinesHead = 0
        }
    }

    func routed(_ id: UInt64, reached: Int, loop: EventLoop) {
        guard let call = calls[id] else { return }
        if reached == 0 {
            let name = CorrelationNumber.text(id)
            finish(id, .failure(EvbusError(.noResponder, "no responder: nothing that can answer is subscribed or consuming where request \(name) went")), loop: loop)
            return
        }
        calls[id]?.expected = reached
        if case .all = call.waiter, call.replies.count >= reached { finish(id, .success(()), loop: loop) }
    }

    /// `id` if a call is waiting for it; otherwise (a call that timed out, or an id this peer never
    /// issued) nil, and the reply counts as late.
    func waiting(_ id: UInt64?) -> UInt64? {
        if let id, calls[id] != nil { return id }
        lateReplies += 1
        return nil
    }

    func reply(_ id: UInt64, _ reply: Reply, loop: EventLoop) {
        // Only the waiter is copied out: holding the whole call would make the append below copy
        // the replies gathered so far.
        guard let waiter = calls[id]?.waiter else {
            lateReplies += 1
            return
        }
        switch waiter {
        case .one:
            if !reply.properties.headers.isEmpty, reply.headers[ReplyHeader.status] == ReplyHeader.error {
                let code = reply.headers[ReplyHeader.errorCode] ?? "error"
                finish(id, .failure(EvbusError(.remote, remoteCode: code, reply.text)), loop: loop)
            } else {
                finish(id, .reply(reply), loop: loop)
            }
        case .all:
            calls[id]!.replies.append(reply)
            if let expected = calls[id]!.expected, calls[id]!.replies.count >= expected { finish(id, .success(()), loop: loop) }
        }
    }

    /// The broker refused the request (a RETURN naming it by its correlation id): it fails at once.
    /// Returns false if no call of this peer has that id.
    func refused(_ id: UInt64, _ error: EvbusError, loop: EventLoop) -> Bool {
        guard calls[id] != nil else { return false }
        finish(id, .failure(error), loop: loop)
        return true
    }

    func responderGone(_ id: UInt64, loop: EventLoop) {
        guard let call = calls[id] else { return }
        switch call.waiter {
        case .one:
            let name = CorrelationNumber.text(id)
            finish(id, .failure(EvbusError(.responderGone, "the responder that accepted request \(name) went away before replying")), loop: loop)
        case .all:
            // One fewer reply to wait for.
            if let expected = call.expected {
                calls[id]?.expected = expected - 1
                if call.replies.count >= expected - 1 { finish(id, .success(()), loop: loop) }
            }
        }
    }

    /// The deadline passed: a single call fails with `timeout`; `requestAll` returns what it has.
    private func expire(_ id: UInt64, after limit: Duration, loop: EventLoop) {
        guard let call = calls[id] else { return }
        switch call.waiter {
        case .one: finish(id, .failure(EvbusError(.timeout, "no reply to request \(CorrelationNumber.text(id)) within \(limit)")), loop: loop)
        case .all: finish(id, .success(()), loop: loop)
        }
    }

    /// The caller gave up (its task was cancelled): `request` and `requestAll` throw
    /// `CancellationError`.
    func cancel(_ id: UInt64, loop: EventLoop) {
        finish(id, .cancelled, loop: loop)
    }

    func failAll(_ error: EvbusError, loop: EventLoop) {
        for id in Array(calls.keys) { finish(id, .failure(error), loop: loop) }
        if let timer { loop.cancelTimer(timer) }
        timer = nil
    }

    private enum Outcome {
        /// A single call's reply.
        case reply(Reply)
        /// `requestAll` returns what it gathered.
        case success(Void)
        case failure(EvbusError)
        case cancelled
    }

    private func finish(_ id: UInt64, _ outcome: Outcome, loop: EventLoop) {
        guard let call = calls.removeValue(forKey: id) else { return }
        if deadlinesHead < deadlines.count && deadlines[deadlinesHead].id == id { dropFinished() }
        switch (call.waiter, outcome) {
        case (.one(let c), .reply(let reply)): c.resume(returning: reply)
        case (.one(let c), .success): c.resume(throwing: EvbusError(.protocolViolation, "request \(CorrelationNumber.text(id)) ended without a reply"))
        case (.one(let c), .failure(let e)): c.resume(throwing: e)
        case (.all(let c), .reply(let reply)): c.resume(returning: call.replies + [reply])
        case (.all(let c), .success): c.resume(returning: call.replies)
        case (.all(let c), .failure(let e)): c.resume(throwing: e)
        case (.one(let c), .cancelled): c.resume(throwing: CancellationError())
        case (.all(let c), .cancelled): c.resume(throwing: CancellationError())
        }
    }
}
