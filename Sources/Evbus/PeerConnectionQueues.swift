import EvbusIO
import EvbusWire

/// The queue and request/reply side of the peer connection: consumers, publisher confirms and calls.
/// Loop-bound, like the rest of `PeerConnection`.
extension PeerConnection {
    /// CONSUME: the sink is in place before the broker can deliver; removed again if refused. A
    /// caller that gives up first never gets the consumer: its deliveries stop at once and the
    /// consumer is cancelled once the broker has made it (unacknowledged ones go back to the queue).
    func consume(_ frame: Frame, id: UInt32, sink: Sink, _ waiter: ControlWaiter<Void>) {
        if let failure { return waiter.resume(throwing: failure) }
        sinks[id] = sink
        waiter.onGiveUp = { [self] in removeSink(id) }
        request(frame, id: id) { [self] result in
            switch result {
            case .success where waiter.gaveUp:
                request(.cancel(consumerID: id), id: id) { _ in }
            case .success:
                if case .consume(_, let queue, let flags, let prefetch) = frame {
                    topology.consuming(id, queue: queue, flags: flags, prefetch: prefetch)
                }
                waiter.resume()
            case .failure(let error):
                removeSink(id)
                waiter.resume(throwing: error)
            }
        }
    }

    /// CANCEL: deliveries stop at once; iteration ends.
    func cancelConsumer(_ id: UInt32, _ waiter: ControlWaiter<Void>) {
        removeSink(id)?.finish(nil)
        topology.forget(id)
        if case .restoring = phase { cancelAfterRestore.append(id) }
        if let failure { return waiter.resume(throwing: failure) }
        // OK or unknown-consumer (the broker cancelled it first): either way it is gone.
        request(.cancel(consumerID: id), id: id) { _ in waiter.resume() }
    }

    /// An iterated consumer's sequence and every iterator of it are gone: nothing will read what
    /// it takes, so it is cancelled, and its unacknowledged deliveries go back to the queue.
    func consumerDropped(_ id: UInt32) {
        guard removeSink(id) != nil else { return }  // cancelled or ended already
        topology.forget(id)
        switch phase {
        case .open: request(.cancel(consumerID: id), id: id) { _ in }
        case .restoring: cancelAfterRestore.append(id)
        case .handshaking, .disconnected, .rehandshaking, .closing, .closed: break  // no consumer on the broker to cancel
        }
    }

    /// Resumes once every confirmed publish up to `through` is answered; throws if any was nacked.
    func waitForConfirms(through: UInt64, number: UInt64, timeout: Duration, _ continuation: CheckedContinuation<Void, any Error>) {
        // While reconnecting, the unanswered ones still queued go out on the next connection.
        if confirms.confirmedThrough < through, case .closed = phase, let failure { return continuation.resume(throwing: failure) }
        if let outcome = confirms.settled(through: through) { return continuation.resume(with: outcome.mapError { $0 }) }
        let timer = channel.loop.scheduleTimer(afterNanos: timeout.wholeNanoseconds) { [self] in
            stopWaitingForConfirms(number, EvbusError(.timeout, "no answer to publisher confirms within \(timeout)"))
        }
        confirms.wait(through: through, ConfirmTracker.Waiter(number: number, continuation: continuation, timer: timer))
    }

    /// Ends waiter `number` with `error` (its timeout, or `CancellationError`), if it still waits.
    func stopWaitingForConfirms(_ number: UInt64, _ error: any Error) {
        guard let waiter = confirms.giveUp(number) else { return }
        resume(waiter, with: .failure(error))
    }

    /// Resumes a confirm waiter, dropping its timer.
    func resume(_ waiter: ConfirmTracker.Waiter, with outcome: Result<Void, any Error>) {
        if let timer = waiter.timer { channel.loop.cancelTimer(timer) }
        waiter.continuation.resume(with: outcome)
    }

    /// Registers a request and sends it (after everything published before it).
    func startCall(_ request: OutgoingRequest, _ call: RequestTable.Call, timeout: Duration) {
        if let failure {
            switch call.waiter {
            case .one(let c): c.resume(throwing: failure)
            case .all(let c): c.resume(throwing: failure)
            }
            return
        }
        var request = request
        if request.replyTo != inboxBytes {
            // Built for the inbox of a connection that has since been replaced.
            request = OutgoingRequest(
                flags: request.flags, destination: request.destination, number: request.number, replyTo: inboxBytes,
                encodedHeaders: request.headers, payload: request.payload, expirationMillis: request.expirationMillis)
            guard request.size - 4 <= facts.maxFrame else {
                let error = EvbusError(.invalidArgument, wireCode: .frameTooLarge,
                    "the request makes a \(request.size - 4)-byte frame; the broker's limit is \(facts.maxFrame)")
                switch call.waiter {
                case .one(let c): c.resume(throwing: error)
                case .all(let c): c.resume(throwing: error)
                }
                return
            }
        }
        calls.add(request.number, call, timeout: timeout, loop: channel.loop)
        // After everything published before it, like every control frame.
        channel.write(contentsOf: outbox.take())
        let size = request.size
        request.write(into: channel.reserve(size))
        channel.commit(size)
    }

    /// The caller's task was cancelled: its call ends now with `CancellationError` (a reply that
    /// comes later counts as late). Nothing if the call already ended.
    func cancelCall(_ number: UInt64) {
        calls.cancel(number, loop: channel.loop)
    }
}
