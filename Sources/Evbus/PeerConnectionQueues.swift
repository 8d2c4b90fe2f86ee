import EvbusIO
import EvbusWire

/// The queue and request/reply side of the peer connection: consumers, publisher confirms and calls.
/// Loop-bound, like the rest of `PeerConnection`.
extension PeerConnection {
    /// CONSUME: the sink is in place before the broker can deliver; removed again if refused.
    func consume(_ frame: Frame, id: UInt32, sink: Sink, _ waiter: CheckedContinuation<Void, any Error>) {
        if let failure { return waiter.resume(throwing: failure) }
        sinks[id] = sink
        request(frame, id: id) { [self] result in
            switch result {
            case .success: waiter.resume()
            case .failure(let error):
                sinks[id] = nil
                waiter.resume(throwing: error)
            }
        }
    }

    /// CANCEL: deliveries stop at once; iteration ends.
    func cancelConsumer(_ id: UInt32, _ waiter: CheckedContinuation<Void, any Error>) {
        sinks.removeValue(forKey: id)?.finish(nil)
        if let failure { return waiter.resume(throwing: failure) }
        // OK or unknown-consumer (the broker cancelled it first): either way it is gone.
        request(.cancel(consumerID: id), id: id) { _ in waiter.resume() }
    }

    /// Resumes once every confirmed publish up to `through` is answered; throws if any was nacked.
    func waitForConfirms(through: UInt64, _ waiter: CheckedContinuation<Void, any Error>) {
        if confirms.confirmedThrough < through, let failure { return waiter.resume(throwing: failure) }
        if let outcome = confirms.wait(through: through, waiter) { waiter.resume(with: outcome.mapError { $0 }) }
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
        calls.add(request.number, call, timeout: timeout, loop: channel.loop)
        // After everything published before it, like every control frame.
        channel.write(contentsOf: outbox.take())
        let size = request.size
        request.write(into: channel.reserve(size))
        channel.commit(size)
    }
}
