import EvbusIO
import EvbusWire
import Synchronization

/// Publishes from any thread land here, encoded, under one lock; the peer's loop moves the whole
/// batch into the socket's write queue (no copy) and flushes it with one `sendmsg`.
///
/// Backpressure: when more than `highWatermark` bytes wait here, `publish` suspends until the loop
/// has moved them to the socket, which it only does while the socket's own queue is below its
/// high watermark. Memory stays bounded however fast the caller publishes.
final class Outbox: Sendable {
    struct State: ~Copyable {
        var queue = WriteQueue()
        /// A drain task is queued on the loop (or the socket is full and will drain when writable).
        var drainScheduled = false
        var closed: EvbusError?
        /// Publishers waiting for room, by the number `waitForRoom` gave each (so a cancelled one
        /// can be found and let go).
        var waiters: [(number: UInt64, continuation: CheckedContinuation<Void, any Error>)] = []
        /// Confirmed publishes queued so far: the broker numbers them in the same order (1, 2, 3...).
        var confirmSequence: UInt64 = 0
        /// Confirmed publishes moved to the socket so far (the rest are still here).
        var confirmTaken: UInt64 = 0
        /// Set while the peer is disconnected and reconnecting: why, and whether a publish that
        /// does not fit fails (instead of waiting).
        var disconnected: (error: EvbusError, failWhenFull: Bool)?
        /// Delivery tags up to this one belong to connections that have ended: acks for them are
        /// dropped (the broker requeued those messages). Later tags go out as `tag - tagBase`.
        var tagBase: UInt64 = 0
    }

    enum Admission {
        /// Queued; `scheduleDrain` says a drain must be submitted to the loop, `full` that the caller must wait.
        case queued(scheduleDrain: Bool, full: Bool)
        case closed(EvbusError)
    }

    let state = Mutex(State())
    private let waiterNumbers = Atomic<UInt64>(0)
    let highWatermark: Int
    let lowWatermark: Int

    init(highWatermark: Int, lowWatermark: Int) {
        self.highWatermark = highWatermark
        self.lowWatermark = lowWatermark
    }

    /// Encodes a frame of `size` bytes with `encode` straight into the queue.
    @inline(__always)
    func append(size: Int, confirm: Bool = false, _ encode: (UnsafeMutableRawPointer) -> Void) -> Admission {
        state.withLock { s in
            if let closed = s.closed { return .closed(closed) }
            if let d = s.disconnected, d.failWhenFull, s.queue.count + size > highWatermark { return .closed(d.error) }
            if confirm { s.confirmSequence += 1 }
            encode(s.queue.reserve(size))
            s.queue.commit(size)
            let schedule = !s.drainScheduled
            s.drainScheduled = true
            return .queued(scheduleDrain: schedule, full: s.queue.count > highWatermark)
        }
    }

    /// Queues an ACK or NACK for a peer-wide delivery tag, translated to the tag of the
    /// connection that delivered it; a tag of an earlier connection is dropped (false).
    func appendAck(_ type: FrameType, tag: UInt64, flags: UInt8) -> Admission? {
        state.withLock { s in
            if let closed = s.closed { return .closed(closed) }
            guard tag > s.tagBase else { return nil }
            let wireTag = tag - s.tagBase
            AckEncoder.write(into: s.queue.reserve(AckEncoder.size), type: type, deliveryTag: wireTag, flags: flags)
            s.queue.commit(AckEncoder.size)
            let schedule = !s.drainScheduled
            s.drainScheduled = true
            return .queued(scheduleDrain: schedule, full: false)
        }
    }

    /// Loop side: the connection dropped and the peer will reconnect. Acks still queued name
    /// deliveries of the old connection, so they go; tags up to `tagBase` become stale. Returns
    /// how many confirmed publishes had been moved to the socket (those not yet answered are in
    /// doubt; the ones still queued here go out on the next connection).
    func disconnect(_ error: EvbusError, failWhenFull: Bool, tagBase: UInt64) -> UInt64 {
        state.withLock { s in
            s.disconnected = (error, failWhenFull)
            s.tagBase = tagBase
            s.drainScheduled = true  // nothing drains until the peer is back
            s.queue.removeFrames { $0 == FrameType.ack.rawValue || $0 == FrameType.nack.rawValue }
            return s.confirmTaken
        }
    }

    /// Loop side: connected again; the caller drains next.
    func reconnected() {
        state.withLock { $0.disconnected = nil }
    }

    /// The sequence number of the last confirmed publish queued.
    var confirmSequence: UInt64 { state.withLock { $0.confirmSequence } }

    /// Suspends until the queue is back under the low watermark (or the peer closed). A cancelled
    /// task stops waiting with `CancellationError`: what it queued stays queued (a publish is not
    /// withdrawn), but a cancelled loop of publishes ends instead of growing the queue unbounded.
    func waitForRoom() async throws {
        let number = waiterNumbers.add(1, ordering: .relaxed).newValue
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                let resumeNow: Result<Void, any Error>? = state.withLock { s in
                    if let closed = s.closed { return .failure(closed) }
                    if s.queue.count <= lowWatermark { return .success(()) }
                    // Checked under the lock: a cancellation handler that ran before this found nothing to resume.
                    if Task.isCancelled { return .failure(CancellationError()) }
                    s.waiters.append((number, c))
                    return nil
                }
                if let resumeNow { c.resume(with: resumeNow) }
            }
        } onCancel: {
            let waiter = state.withLock { s -> CheckedContinuation<Void, any Error>? in
                guard let i = s.waiters.firstIndex(where: { $0.number == number }) else { return nil }
                return s.waiters.remove(at: i).continuation
            }
            waiter?.resume(throwing: CancellationError())
        }
    }

    /// Loop side: takes everything queued and wakes waiting publishers.
    func take() -> WriteQueue {
        var waiters: [(number: UInt64, continuation: CheckedContinuation<Void, any Error>)] = []
        let queue = state.withLock { s in
            s.drainScheduled = false
            s.confirmTaken = s.confirmSequence
            swap(&waiters, &s.waiters)
            return s.queue.take()
        }
        for w in waiters { w.continuation.resume() }
        return queue
    }

    /// Confirmed publishes still queued here, not yet handed to the socket.
    var confirmsNotTaken: UInt64 { state.withLock { $0.confirmSequence &- $0.confirmTaken } }

    /// Loop side: the socket is full; keep `drainScheduled` set so publishers stop submitting
    /// drain tasks until the socket's writable callback drains.
    func holdWhileSocketFull() {
        state.withLock { $0.drainScheduled = true }
    }

    /// Refuses all further publishes with `error` and fails waiting publishers.
    func close(_ error: EvbusError) {
        let waiters = state.withLock { s in
            if s.closed == nil { s.closed = error }
            let w = s.waiters
            s.waiters.removeAll()
            return w
        }
        for w in waiters { w.continuation.resume(throwing: error) }
    }
}
