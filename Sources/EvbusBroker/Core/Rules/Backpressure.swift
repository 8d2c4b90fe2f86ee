import EvbusWire

/// Slow receivers: what happens when a connection's output or a queue's ready messages pass the
/// high watermark, and when they drain below the low one (PROTOCOL.md §8).
extension BrokerCore {
    /// How long a subscriber cut off as slow has to read its ERROR before the socket closes.
    static var slowConsumerGraceNanos: UInt64 { 10_000_000_000 }

    /// The slow-consumer policy of one of `receiver`'s subscriptions: its own, or the broker's.
    func slowPolicy(of subscription: UInt32, _ receiver: ConnectionState) -> SlowConsumerPolicy {
        guard !receiver.slowStates.isEmpty, let own = receiver.slowStates[subscription]?.policy else { return settings.slowConsumerPolicy }
        return own
    }

    /// `receiver`'s output just passed the high watermark (or was already over it), with a
    /// delivery for `subscription`, whose policy decides.
    func overHighWatermark(_ receiver: ConnectionState, publisher: ConnectionState?, subscription: UInt32) {
        blockConsumers(of: receiver)
        switch slowPolicy(of: subscription, receiver) {
        case .drop:
            break  // later deliveries are dropped until it drains
        case .disconnect:
            guard receiver.isOpen else { return }
            stats.slowConsumerDisconnects &+= 1
            output.log(.warning, receiver.slot, event: "closed", fields: [("reason", "slow-consumer")], "disconnected as a slow consumer (\(output.bufferedBytes(receiver.slot)) bytes queued)")
            // What it has not begun to receive is dropped, so the ERROR is next after the frame
            // in progress; it has `slowConsumerGraceNanos` to read them before the close.
            output.discardQueued(receiver.slot)
            send(.error(code: .slowConsumer, requestID: 0,
                message: "more than \(settings.highWatermarkBytes) bytes queued for this connection; it is not reading fast enough"), to: receiver)
            receiver.isOpen = false
            output.close(receiver.slot, graceNanos: Self.slowConsumerGraceNanos)
        case .backpressure:
            if let publisher, pause(publisher, into: &receiver.blockedPublishers) {
                receiver.slowStates[subscription, default: SubscriptionSlowState()].paused &+= 1
            }
        }
    }

    /// Stops deliveries to `s`'s consumers until its output drains.
    func blockConsumers(of s: ConnectionState) {
        guard !s.outputFull else { return }
        s.outputFull = true
        for consumer in s.consumers.values { consumer.blocked = true }
    }

    /// The connection drained below its low watermark: its consumers may take messages again.
    func unblockConsumers(of s: ConnectionState) {
        guard s.outputFull else { return }
        s.outputFull = false
        for consumer in s.consumers.values { consumer.blocked = false }
        for consumer in s.consumers.values { dispatch(consumer.queue) }
    }

    /// A queue holds more than the high watermark of ready messages (its consumers are slower than
    /// its publishers, or it has none): stop reading from this publisher until it drains, so memory
    /// stays bounded. A publisher that is also a consumer is never paused: it could not send the
    /// acks that would drain the queue (RabbitMQ's advice is separate connections; this is safe by default).
    func queueOverHighWatermark(_ queue: MessageQueue, publisher: ConnectionState) {
        guard publisher.consumers.isEmpty, publisher.isOpen else { return }
        pause(publisher, into: &queue.blockedPublishers)
    }

    /// Pauses reading from `publisher` until everything in `list` that holds it releases it.
    /// Returns whether it was not already paused by `list`'s owner.
    @discardableResult
    private func pause(_ publisher: ConnectionState, into list: inout [PublisherRef]) -> Bool {
        let ref = PublisherRef(slot: publisher.slot, id: publisher.id)
        if list.contains(ref) { return false }
        list.append(ref)
        publisher.blockedBy += 1
        if publisher.blockedBy == 1 {
            stats.backpressurePauses &+= 1
            output.pauseReading(publisher.slot)
        }
        return true
    }

    /// `receiver` drained below the low watermark, or closed: let its publishers go on.
    func releasePublishers(blockedOn receiver: ConnectionState) {
        let blocked = receiver.blockedPublishers
        receiver.blockedPublishers.removeAll()
        resume(blocked)
    }

    /// A queue drained below the low watermark, or went away: let its publishers go on.
    func releasePublishers(blockedOn queue: MessageQueue) {
        let blocked = queue.blockedPublishers
        queue.blockedPublishers.removeAll()
        resume(blocked)
    }

    private func resume(_ blocked: [PublisherRef]) {
        for ref in blocked {
            guard let publisher = session(ref.slot), publisher.id == ref.id else { continue }
            publisher.blockedBy -= 1
            if publisher.blockedBy == 0 { output.resumeReading(publisher.slot) }
        }
    }
}
