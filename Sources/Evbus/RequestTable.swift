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
        var timer: TimerID?
        /// Responders the broker reached (from ROUTED); nil until it says.
        var expected: Int?
        var replies: [Reply] = []
        init(_ waiter: Waiter) { self.waiter = waiter }
    }

    private var calls: [String: Call] = [:]
    /// Replies that came after their call timed out (or for ids never issued): discarded.
    private(set) var lateReplies = 0

    var count: Int { calls.count }

    func add(_ id: String, _ call: Call) { calls[id] = call }

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
    func expire(_ id: String, after limit: Duration, loop: EventLoop) {
        guard let call = calls[id] else { return }
        call.timer = nil
        switch call.waiter {
        case .one: finish(id, .failure(EvbusError(.timeout, "no reply to request \(id) within \(limit)")), loop: loop)
        case .all: finish(id, .success(()), loop: loop)
        }
    }

    func failAll(_ error: EvbusError, loop: EventLoop) {
        for id in Array(calls.keys) { finish(id, .failure(error), loop: loop) }
    }

    private func finish(_ id: String, _ outcome: Result<Void, EvbusError>, loop: EventLoop) {
        guard let call = calls.removeValue(forKey: id) else { return }
        if let timer = call.timer { loop.cancelTimer(timer) }
        switch (call.waiter, outcome) {
        case (.one(let c), .success): c.resume(returning: call.replies[0])
        case (.one(let c), .failure(let e)): c.resume(throwing: e)
        case (.all(let c), .success): c.resume(returning: call.replies)
        case (.all(let c), .failure(let e)): c.resume(throwing: e)
        }
    }
}
