import EvbusIO
import EvbusWire

/// How a `PeerConnection` ends: a graceful `close()`, a failure, the channel closing (which hands
/// over to reconnecting when the policy says so), or the `Peer` being dropped. Loop-bound.
extension PeerConnection {
    /// Graceful close: send what is queued and CLOSE, then wait for the broker to close its end
    /// (which it does after handling everything before CLOSE).
    func close(_ waiter: CheckedContinuation<Void, Never>) {
        if case .disconnected = phase {
            endForGood(EvbusError(.closed, "the peer was closed"), wasClosing: true)
        }
        if channel.isClosed {
            return waiter.resume()
        }
        closeWaiters.append(waiter)
        if case .closing = phase { return }
        phase = .closing
        send(.close(code: 0, reason: "client closing"))
        outbox.close(EvbusError(.closed, "the peer was closed"))
        channel.loop.scheduleTimer(afterNanos: 2_000_000_000) { [weak self] in self?.channel.close(.local) }
    }

    /// `Peer.connect`'s task was cancelled before WELCOME: it throws `CancellationError` now,
    /// and the connection ends for good (the broker sees the socket close).
    func cancelHandshake() {
        guard case .handshaking(let waiter) = phase else { return }
        failure = EvbusError(.closed, "connecting was cancelled")
        phase = .closed
        if let timer = handshakeTimer { channel.loop.cancelTimer(timer) }
        channel.close(.local)
        waiter.resume(throwing: CancellationError())
    }

    /// The connection is unusable: remember why and close the socket.
    func fail(_ error: EvbusError) {
        if failure == nil { failure = error }
        channel.close(.local)
    }

    func channelBecameWritable(_ channel: Channel) {
        drainOutbox()
    }

    func channelClosed(_ channel: Channel, _ reason: Channel.CloseReason) {
        let wasClosing: Bool
        if case .closing = phase { wasClosing = true } else { wasClosing = false }
        let error: EvbusError
        if let failure {
            error = failure
        } else if wasClosing {
            error = EvbusError(.closed, "the peer was closed")
        } else {
            error = EvbusError(.connectionLost, "the connection to the broker ended: \(reason)")
        }
        switch phase {
        case .open, .rehandshaking, .restoring:
            if reconnect.reconnects { return connectionDropped(error) }
            if case .open = phase { events.emit(.disconnected(error)) }  // and no reconnecting after it
        case .handshaking, .disconnected, .closing, .closed:
            break
        }
        endForGood(error, wasClosing: wasClosing)
    }

    /// The `Peer` was dropped without `close()`: end the connection abruptly, stop reconnecting.
    func abandon() {
        let error = EvbusError(.closed, "the peer was dropped")
        if channel.isClosed {
            if case .closed = phase { return }
            endForGood(error, wasClosing: true)
        } else {
            failure = error
            phase = .closing
            channel.close(.local)
        }
    }

    /// Fails everything that waits and ends every subscription and consumer: the peer is done.
    func endForGood(_ error: EvbusError, wasClosing: Bool) {
        cancelRetry()
        failure = error
        let handshake: CheckedContinuation<(LoopBound<PeerConnection>, Welcome), any Error>?
        if case .handshaking(let waiter) = phase { handshake = waiter } else { handshake = nil }
        phase = .closed
        outbox.close(error)
        handshake?.resume(throwing: error)
        let (requests, pings) = pending.takeAll()
        for handler in requests { handler(.failure(error)) }
        for w in pings { w.resume(throwing: error) }
        // A deliberate close ends iteration normally; a lost connection makes it throw.
        let endError: EvbusError? = wasClosing && error.code == .closed ? nil : error
        let ended = sinks
        sinks.removeAll()
        for (_, sink) in ended { sink.finish(endError) }
        for w in confirms.takeWaiters() { resume(w, with: .failure(error)) }
        calls.failAll(error, loop: channel.loop)
        acker = nil
        let waiting = closeWaiters
        closeWaiters.removeAll()
        for w in waiting { w.resume() }
        events.finish()
    }
}
