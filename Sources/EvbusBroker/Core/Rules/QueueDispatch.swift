import EvbusWire

/// Queues: admitting messages, dispatching them to consumers, TTL expiry.
extension BrokerCore {
    /// When a message put into `queue` now expires (clock ns), from the queue's TTL and the
    /// message's own expiration, whichever is sooner; 0 = never.
    @inline(__always)
    func expiry(for queue: MessageQueue, properties: UnsafeRawBufferPointer) -> UInt64 {
        let ttl: UInt32
        switch (queue.options.messageTTL, StoredMessage.expiration(inPropertiesBlock: properties)) {
        case (nil, nil): return 0
        case (let q?, nil): ttl = q
        case (nil, let m?): ttl = m
        case (let q?, let m?): ttl = min(q, m)
        }
        return clock.now() &+ UInt64(ttl) * 1_000_000
    }

    /// Admits a message to a queue (limits, drop-head dead letters) and dispatches. False = refused.
    @inline(__always)
    func enqueue(_ message: StoredMessage, into queue: MessageQueue) -> Bool {
        guard queue.enqueue(message, dropped: &droppedScratch) else { return false }
        stats.queued &+= 1
        if !droppedScratch.isEmpty {
            let dropped = droppedScratch
            droppedScratch.removeAll(keepingCapacity: true)
            for m in dropped { deadLetter(m, from: queue, reason: "maxlen") }
        }
        dispatch(queue)
        return true
    }

    /// Moves ready messages to consumers with room until none has room or the queue is empty;
    /// expires heads on the way and arms an expiry for the next one.
    func dispatch(_ queue: MessageQueue) {
        loop: while true {
            if let head = queue.head, head.isRequest, !callerIsConnected(head), let m = queue.dropHead() {
                // Its caller has gone (its inbox with it): nobody would read the answer, so it is never run.
                stats.requestsCallerGone &+= 1
                deadLetter(m, from: queue, reason: "caller-gone")
                continue
            }
            switch queue.next(now: clock.now()) {
            case .idle:
                break loop
            case .expired(let m):
                stats.expired &+= 1
                deadLetter(m, from: queue, reason: "expired")
            case .deliver(let m, let consumer):
                // A consumer is removed before its connection's slot is freed, so this always finds it.
                withSession(consumer.connectionSlot) { receiver in
                    let tag = consumer.manualAck ? receiver.ledger.record(m, consumer: consumer) : 0
                    if m.isRequest && !consumer.manualAck { openRequest(m, acceptedBy: receiver) }
                    if mustHold(m, from: queue, consumer: consumer, to: receiver) {
                        hold(m, from: queue, consumer: consumer, to: receiver, tag: tag)
                    } else {
                        writeMessage(m, consumer: consumer, tag: tag, to: receiver)
                    }
                }
            }
        }
        armExpiry(queue)
        if queue.canPage && isPersisting { pageInIfNeeded(queue) }
        if !queue.blockedPublishers.isEmpty && queue.readyMemory <= settings.lowWatermarkBytes {
            releasePublishers(blockedOn: queue)
        }
    }

    /// Writes one MESSAGE frame; a full output blocks the connection's consumers.
    @inline(__always)
    func writeMessage(_ m: StoredMessage, consumer: ConsumerRecord, tag: UInt64, to receiver: ConnectionState) {
        let size = MessageEncoder.size(tailCount: m.tail.count)
        m.tail.withUnsafeBytes { tail in
            // The tail starts with the publisher's connection id (MessageEncoder.writeTail).
            let publisherID = UInt64(littleEndian: tail.loadUnaligned(as: UInt64.self))
            if receiver.lastSender != publisherID { announceSender(publisherID, publisher: nil, to: receiver) }
            MessageEncoder.write(
                into: reserve(receiver.slot, size), consumerID: consumer.id, deliveryTag: tag,
                flags: m.redelivered ? AckFlag.redelivered : 0, tail: tail)
        }
        receiver.delivered &+= 1
        if !commit(receiver.slot, size) { blockConsumers(of: receiver) }
    }

    private func armExpiry(_ queue: MessageQueue) {
        guard let at = queue.head?.expiresAt, at != 0, queue.expiryTimerAt == 0 || at < queue.expiryTimerAt else { return }
        queue.expiryTimerAt = at
        expiries.push(.init(deadline: at, queueSlot: queue.slot, queue: ObjectIdentifier(queue)))
        requestWake()
    }

    /// Runs the dispatch that ACKs deferred (end of a read batch, or before anything that must see it).
    func flushPendingDispatch() {
        guard let queue = pendingDispatch else { return }
        pendingDispatch = nil
        // The queue may have been deleted by a later frame of the batch.
        if topology.queues[Int(queue.slot)] === queue { dispatch(queue) }
    }

    /// Puts messages back at the head of their queues, in their original order, and dispatches.
    func requeue(_ messages: [UnackedLedger.Settled]) {
        for q in Self.distinct(messages.map(\.consumer.queue)) {
            q.requeue(messages.filter { $0.consumer.queue === q }.map(\.message))
            dispatch(q)
        }
    }

    static func distinct(_ queues: [MessageQueue]) -> [MessageQueue] {
        var seen = Set<ObjectIdentifier>()
        return queues.filter { seen.insert(ObjectIdentifier($0)).inserted }
    }
}
