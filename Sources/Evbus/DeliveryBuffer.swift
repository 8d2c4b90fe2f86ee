import EvbusWire
import Synchronization

/// The bounded buffer behind the async iteration of a `Subscription` (of `Event`s) and of a
/// `Consumer` (of `Delivery`s).
///
/// The peer's loop pushes; one consumer task pops. When `capacity` events wait unread, the loop
/// stops reading the socket (so the broker applies its slow-consumer policy) instead of buffering
/// without bound; reading resumes once the consumer has taken half of them.
final class DeliveryBuffer<Element: Sendable>: Sendable {
    struct State {
        var buffer = RingBuffer<Element>(capacity: 0)
        var waiter: CheckedContinuation<Element?, any Error>?
        /// Set once: nil = normal end, an error = the connection failed.
        var end: EvbusError??
        /// The loop paused reading because of this queue.
        var pausedReading = false
        var count: Int { buffer.count }
    }

    let state = Mutex(State())
    let capacity: Int
    /// Called (on the consumer's thread) once the queue has room again after it paused reading.
    let onRoom: @Sendable () -> Void

    init(capacity: Int, onRoom: @escaping @Sendable () -> Void) {
        self.capacity = capacity
        self.onRoom = onRoom
    }

    /// Loop side. Returns true when the queue is now full and reading should pause.
    func push(_ event: Element) -> Bool {
        let (waiter, full) = state.withLock { s -> (CheckedContinuation<Element?, any Error>?, Bool) in
            if s.end != nil { return (nil, false) }
            if let w = s.waiter {
                s.waiter = nil
                return (w, false)
            }
            s.buffer.append(event)
            if s.count >= capacity && !s.pausedReading {
                s.pausedReading = true
                return (nil, true)
            }
            return (nil, false)
        }
        waiter?.resume(returning: event)
        return full
    }

    /// Loop side: nothing more will be pushed (its subscription or consumer is gone). Returns
    /// true if this queue held the loop's reading paused: the loop lifts that pause itself, so
    /// a reader that stopped reading cannot stall the connection, and one that drains the
    /// queue later owes it nothing.
    func release() -> Bool {
        state.withLock { s in
            defer { s.pausedReading = false }
            return s.pausedReading
        }
    }

    /// Ends iteration after the buffered events: normally (`nil`) or with `error`.
    func finish(_ error: EvbusError?) {
        let waiter = state.withLock { s -> CheckedContinuation<Element?, any Error>? in
            if s.end == nil { s.end = .some(error) }
            defer { s.waiter = nil }
            return s.count == 0 ? s.waiter : nil
        }
        if let error { waiter?.resume(throwing: error) } else { waiter?.resume(returning: nil) }
    }

    /// What `next` found under the lock (a local generic enum crashes the 6.3 compiler's SILGen).
    private enum Outcome { case event(Element, room: Bool), end(EvbusError?), wait }

    func next() async throws -> Element? {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Element?, any Error>) in
                let outcome = state.withLock { s -> Outcome in
                    if let e = s.buffer.popFirst() {
                        var room = false
                        if s.pausedReading && s.count <= capacity / 2 {
                            s.pausedReading = false
                            room = true
                        }
                        return .event(e, room: room)
                    }
                    if let end = s.end { return .end(end) }
                    if Task.isCancelled { return .end(nil) }
                    s.waiter = c
                    return .wait
                }
                switch outcome {
                case .event(let e, let room):
                    if room { onRoom() }
                    c.resume(returning: e)
                case .end(let error?): c.resume(throwing: error)
                case .end(nil): c.resume(returning: nil)
                case .wait: break
                }
            }
        } onCancel: {
            let waiter = state.withLock { s -> CheckedContinuation<Element?, any Error>? in
                defer { s.waiter = nil }
                return s.waiter
            }
            waiter?.resume(returning: nil)
        }
    }
}

typealias EventQueue = DeliveryBuffer<Event>
