import EvbusIO
import EvbusWire

/// The peer's requests in flight, by correlation id. Loop-bound: the peer connection feeds it ROUTED
/// counts, replies from the inbox and responder-gone notices; calls register and time out here.
final class RequestTable {
    final class Call {
        /// One reply (`request`) or all of them (`requestAll`).
        enum Waiter {
            case one(CheckedContinuation<Reply, any Error>)
            case all(CheckedContinuation<[Reply], any Error>)
        }
        let waiter: Waiter
        /// How long it may take (for the timeout's message).
        var limit: Duration = .zero
        /// Responders the broker reached (from ROUTED); nil until it says.
        var expected: Int?
        var replies: [Reply] = []
        init(_ waiter: Waiter) { self.waiter = waiter }
    }

    private var calls: [String: Call] = [:]
    /// Replies that came after their call timed out (or for ids never issued): discarded.
    private(set) var lateReplies = 0
    /// Every call's deadline (monotonic ns), in deadline order. One loop timer serves them all,
    /// armed for the earliest; entries of finished calls are dropped from the front as they finish.
    private var deadlines: [(at: UInt64, id: String)] = []
    private var deadlinesHead = 0
    private var timer: TimerID?
    private var armedAt: UInt64 = 0

    var count: Int { calls.count }

    func add(_ id: String, _ call: Call, timeout: Duration, loop: EventLoop) {
        calls[id] = call
        call.limit = timeout
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

    func routed(_ id: String, reached: Int, loop: EventLoop) {
        guard let call = calls[id] else { return }
        if reached == 0 {
            finish(id, .failure(EvbusError(.noResponder, "no responder: nothing that can answer is subscribed or consuming where request \(id) went")), loop: loop)
            return
        }
        call.expected = reached
        if case .all = call.waiter, call.replies.count >= reached { finish(id, .success(()), loop: loop) }
    }

    func reply(_ id: String, _ reply: Reply, loop: EventLoop) {
        guard let call = calls[id] else {
            lateReplies += 1
            return
        }
        switch call.waiter {
        case .one:
            if reply.headers[ReplyHeader.status] == ReplyHeader.error {
                let code = reply.headers[ReplyHeader.errorCode] ?? "error"
                finish(id, .failure(EvbusError(.remote, remoteCode: code, reply.text)), loop: loop)
            } else {
                call.replies.append(reply)
                finish(id, .success(()), loop: loop)
            }
        case .all:
            call.replies.append(reply)
            if let expected = call.expected, call.replies.count >= expected { finish(id, .success(()), loop: loop) }
        }
    }

    func responderGone(_ id: String, loop: EventLoop) {
        guard let call = calls[id] else { return }
        switch call.waiter {
        case .one:
            finish(id, .failure(EvbusError(.responderGone, "the responder that accepted request \(id) went away before replying")), loop: loop)
        case .all:
            // One fewer reply to wait for.
            if let expected = call.expected {
                call.expected = expected - 1
                if call.replies.count >= expected - 1 { finish(id, .success(()), loop: loop) }
            }
        }
    }

    /// The deadline passed: a single call fails with `timeout`; `requestAll` returns what it has.
    private func expire(_ id: String, after limit: Duration, loop: EventLoop) {
        guard let call = calls[id] else { return }
        switch call.waiter {
        case .one: finish(id, .failure(EvbusError(.timeout, "no reply to request \(id) within \(limit)")), loop: loop)
        case .all: finish(id, .success(()), loop: loop)
        }
    }

    func failAll(_ error: EvbusError, loop: EventLoop) {
        for id in Array(calls.keys) { finish(id, .failure(error), loop: loop) }
        if let timer { loop.cancelTimer(timer) }
        timer = nil
    }

    private func finish(_ id: String, _ outcome: Result<Void, EvbusError>, loop: EventLoop) {
        guard let call = calls.removeValue(forKey: id) else { return }
        if deadlinesHead < deadlines.count && deadlines[deadlinesHead].id == id { dropFinished() }
        switch (call.waiter, outcome) {
        case (.one(let c), .success): c.resume(returning: call.replies[0])
        case (.one(let c), .failure(let e)): c.resume(throwing: e)
        case (.all(let c), .success): c.resume(returning: call.replies)
        case (.all(let c), .failure(let e)): c.resume(throwing: e)
        }
    }
}
