import EvbusIO
import EvbusWire
import Glibc
import Synchronization

/// What `Peer`'s callers read about the current connection. It changes when the peer reconnects
/// (the loop writes it); callers on any thread read it.
final class ConnectionFacts: Sendable {
    private let id = Atomic<UInt64>(0)
    private let frameLimit = Atomic<Int>(0)
    private let inboxName = Mutex<[UInt8]>([])

    var connectionID: UInt64 { id.load(ordering: .acquiring) }
    var maxFrame: Int { frameLimit.load(ordering: .relaxed) }
    var inbox: [UInt8] { inboxName.withLock { $0 } }

    func update(connectionID: UInt64, maxFrame: Int) -> [UInt8] {
        let inbox = Array(Inbox.name(connectionID: connectionID).utf8)
        inboxName.withLock { $0 = inbox }
        frameLimit.store(maxFrame, ordering: .relaxed)
        id.store(connectionID, ordering: .releasing)
        return inbox
    }
}

/// Surviving a broker restart (docs/LIBRARY.md, "Reconnecting"): when the connection drops the
/// peer fails what was in flight, keeps its subscriptions, consumers and unsent publishes, tries
/// again with backoff, and once welcomed sets everything up again before publishing resumes.
/// Loop-bound, like the rest of `PeerConnection`.
extension PeerConnection {
    /// Takes in the broker's WELCOME (the first or a later one).
    func adopt(connectionID: UInt64, maxFrame: Int) {
        inboxBytes = facts.update(connectionID: connectionID, maxFrame: maxFrame)
    }

    /// The connection dropped (or a try at a new one failed) and the policy says try again.
    func connectionDropped(_ cause: EvbusError) {
        let firstDrop: Bool
        if case .open = phase { firstDrop = true } else { firstDrop = false }
        // A try that fails after connecting ends with the drop's error still standing: say
        // "reconnecting" once, not once more per try.
        let suffix = "; reconnecting"
        let error = EvbusError(.connectionLost, cause.message.hasSuffix(suffix) ? cause.message : cause.message + suffix)
        phase = .disconnected
        failure = error
        // Whatever was in flight on that connection fails now; nothing waits for an answer
        // that cannot come.
        let (requests, pings) = pending.takeAll()
        for handler in requests { handler(.failure(error)) }
        for w in pings { w.resume(throwing: error) }
        calls.failAll(error, loop: channel.loop)
        // Deliveries of the old connection can no longer be acknowledged (the broker requeued
        // them); confirmed publishes it carried are in doubt; what is still queued goes out next time.
        tagBase = highestTag
        let sent = outbox.disconnect(error, failWhenFull: reconnect.whenBufferFull == .fail, tagBase: tagBase)
        for (waiter, outcome) in confirms.connectionEnded(sentThrough: sent) { resume(waiter, with: outcome.mapError { $0 }) }
        if firstDrop {
            disconnectedSince = monotonicNanos()
            attempt = 0
            events.emit(.disconnected(cause))
        }
        scheduleAttempt()
    }

    /// Waits the policy's backoff for the next try, or gives up.
    private func scheduleAttempt() {
        if let limit = reconnect.giveUpAfter, monotonicNanos() &- disconnectedSince >= UInt64(limit.wholeNanoseconds) {
            let error = EvbusError(.connectionLost, "no broker at \(socketPath) for \(limit); gave up reconnecting")
            events.emit(.gaveUp(error))
            endForGood(error, wasClosing: false)
            return
        }
        attempt += 1
        let delay = reconnect.delay(attempt: attempt, random: Double.random(in: 0...1))
        events.emit(.reconnecting(attempt: attempt, after: delay))
        retryTimer = channel.loop.scheduleTimer(afterNanos: UInt64(delay.wholeNanoseconds)) { [weak self] in
            self?.retryTimer = nil
            self?.tryToConnect()
        }
    }

    func cancelRetry() {
        if let retryTimer { channel.loop.cancelTimer(retryTimer) }
        retryTimer = nil
    }

    /// One try: connect and say HELLO; WELCOME continues in `welcomedAgain`, a refusal or a
    /// closed socket in `channelClosed`, which schedules the next try.
    private func tryToConnect() {
        guard case .disconnected = phase else { return }
        let loop = channel.loop
        guard let fd = try? UnixSocket.connect(path: socketPath) else { return scheduleAttempt() }
        let next: Channel
        do {
            next = try Channel(fd: fd, loop: loop, highWatermark: 1 << 20, lowWatermark: 256 << 10)
        } catch {
            Glibc.close(fd)
            return scheduleAttempt()
        }
        channel = next
        next.delegate = self
        if fullQueues > 0 { next.pauseReading() }  // a subscription buffer is still full
        phase = .rehandshaking
        sendHello()
    }

    /// Welcomed by the (restarted) broker: a new connection id and inbox, then everything the
    /// peer had is declared, bound, subscribed and consumed again, in the order it was first made.
    func welcomedAgain(connectionID: UInt64, maxFrame: Int) {
        adopt(connectionID: connectionID, maxFrame: maxFrame)
        senders = SenderTable()  // the broker's connection ids start over
        phase = .restoring
        restore(topology.inOrder().map(\.id)[...])
    }

    /// Sets up `ids` one at a time (a broker-named queue's new name must be known before the
    /// bindings and consumers that follow it are sent). A step unanswered within
    /// `controlTimeout` (a broker that welcomed and then wedged) drops the connection: it
    /// counts as a failed try, and the next one starts over.
    private func restore(_ ids: ArraySlice<UInt32>) {
        guard let id = ids.first else { return restored() }
        guard let entry = topology.entries[id] else { return restore(ids.dropFirst()) }  // gone meanwhile
        let step = channel
        let timeout = controlWaiters.timeout
        let deadline = channel.loop.scheduleTimer(afterNanos: timeout.wholeNanoseconds) { [weak self] in
            guard let self, channel === step, !step.isClosed, case .restoring = phase else { return }
            failure = EvbusError(.connectionLost, "the broker did not answer while \(Self.describe(entry)) was being restored, within \(timeout)")
            step.close(.local)
        }
        request(RestorableTopology.frame(id, entry), id: id) { [self] (result: Result<Frame, any Error>) in
            step.loop.cancelTimer(deadline)
            guard case .restoring = phase else { return }  // dropped again: the next welcome starts over
            switch result {
            case .success(let reply):
                if case .queue(let asked, let old, _) = entry, asked.isEmpty, case .queueOK(_, let info) = reply {
                    topology.renamed(queue: old, to: info.name, declaredBy: id)
                }
            case .failure(let error):
                // Refused this time (an access rule changed, the queue is locked...): the
                // subscription or consumer ends with the reason; the rest carries on.
                topology.forget(id)
                let reason = error as? EvbusError ?? EvbusError(.connectionLost, "\(error)")
                removeSink(id)?.finish(reason)
                onAsyncError?(EvbusError(
                    reason.code, wireCode: reason.wireCode, "could not restore \(Self.describe(entry)) after reconnecting: \(reason.message)"))
            }
            restore(ids.dropFirst())
        }
    }

    /// Everything is set up again: publishes queued meanwhile go out, in order, after it.
    private func restored() {
        phase = .open
        failure = nil
        attempt = 0
        outbox.reconnected()
        for id in cancelAfterRestore { request(.cancel(consumerID: id), id: id) { _ in } }
        cancelAfterRestore.removeAll()
        drainOutbox()
        events.emit(.reconnected(connectionID: facts.connectionID))
    }

    private static func describe(_ entry: RestorableTopology.Entry) -> String {
        switch entry {
        case .exchange(let name, _, _): "exchange \"\(name)\""
        case .queue(_, let name, _): "queue \"\(name)\""
        case .binding(let queue, let exchange, let key): "the binding of \"\(queue)\" to \"\(exchange)\" with \"\(key)\""
        case .subscription(let pattern, _): "the subscription to \"\(pattern)\""
        case .consumer(let queue, _, _): "the consumer of \"\(queue)\""
        }
    }
}
