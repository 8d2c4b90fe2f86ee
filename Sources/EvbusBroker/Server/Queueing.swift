import EvbusIO
import EvbusWire

/// Queues on the wire: PUBLISH_TO, dispatch to consumers, ACK/NACK, redelivery, TTL and dead letters.
extension BrokerServer {
    /// PUBLISH_TO: an exchange and routing key, optionally mandatory and/or confirmed.
    func publishTo(from publisher: BrokerConnection, body: UnsafeRawBufferPointer) throws(WireError) {
        let view = try PublishToView(body: body)
        var sequence: UInt64 = 0
        if view.flags & PublishFlag.confirm != 0 {
            publisher.confirmSequence += 1
            sequence = publisher.confirmSequence
        }
        guard let exchange = topology.exchange(bytes: view.exchange) else {
            let name = String(decoding: view.exchange, as: UTF8.self)
            refusePublish(publisher, sequence, WireError(.unknownExchange, "no exchange named \"\(name)\"; the message was not routed"))
            return
        }
        let targets: [RouteTarget]
        if exchange === topology.defaultExchange, let caller = Inbox.connectionID(view.routingKey) {
            if let slot = slotsByID[caller] {
                // Reused one-element route: a reply costs no array allocation.
                inboxRoute[0] = RouteTarget(connection: slot, subscription: Inbox.subscriptionID)
                targets = inboxRoute
            } else {
                targets = []
            }
            if !publisher.openRequests.isEmpty { answered(by: publisher, caller: caller, properties: view.properties) }
        } else {
            do {
                targets = try exchange.route(view.routingKey)
            } catch {
                refusePublish(publisher, sequence, error)
                return
            }
        }
        let isRequest = view.flags & PublishFlag.request != 0
        if isRequest {
            let correlationID: String
            do {
                correlationID = try checkRequest(view.properties)
            } catch {
                refusePublish(publisher, sequence, error)
                return
            }
            let reached = responders(in: targets)
            if reached == 0 || view.flags & PublishFlag.reportReached != 0 {
                publisher.send(.routed(reached: UInt32(reached), correlationID: correlationID))
            }
            if reached == 0 {
                // Nobody can answer: say so now (ROUTED 0) instead of leaving it to time out in a queue.
                stats.published &+= 1
                stats.unroutable &+= 1
                if sequence != 0 { publisher.confirmPending = sequence }
                return
            }
        }
        stats.published &+= 1
        if targets.isEmpty {
            stats.unroutable &+= 1
            if view.flags & PublishFlag.mandatory != 0 {
                stats.returned &+= 1
                publisher.send(.returned(
                    code: .unroutable, exchange: exchange.name, routingKey: String(decoding: view.routingKey, as: UTF8.self),
                    properties: MessageProperties.decode(block: view.properties), payload: Array(view.payload)))
            }
        } else {
            let outcome = deliver(
                to: targets, from: publisher, publisherID: publisher.id, exchange: view.exchange,
                routingKey: view.routingKey, properties: view.properties, payload: view.payload, isRequest: isRequest)
            if let full = outcome.rejectedBy {
                stats.rejectedPublishes &+= 1
                refusePublish(publisher, sequence, WireError(.queueFull,
                    "queue \"\(full.name)\" is full (\(Topology.describe(full.options))); the message was refused there"))
                return
            }
        }
        if sequence != 0 { publisher.confirmPending = sequence }
    }

    /// A publish that did not go (everywhere): an ERROR frame saying why, and a nack when confirmed.
    private func refusePublish(_ publisher: BrokerConnection, _ sequence: UInt64, _ error: WireError) {
        publisher.refuse(error, requestID: 0)
        if sequence != 0 {
            publisher.flushConfirms()
            publisher.send(.confirm(sequence: sequence, flags: AckFlag.nack))
        }
    }

    /// When a message put into `queue` now expires (monotonic ns), from the queue's TTL and the
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
        return monotonicNanos() &+ UInt64(ttl) * 1_000_000
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

    // MARK: Dispatch

    /// Moves ready messages to consumers with room until none has room or the queue is empty;
    /// expires heads on the way and arms a timer for the next expiry.
    func dispatch(_ queue: MessageQueue) {
        loop: while true {
            switch queue.next(now: monotonicNanos()) {
            case .idle:
                break loop
            case .expired(let m):
                stats.expired &+= 1
                deadLetter(m, from: queue, reason: "expired")
            case .deliver(let m, let consumer):
                // A consumer is removed before its connection's slot is freed, so this always finds it.
                guard let receiver = connections[Int(consumer.connectionSlot)] else { continue }
                let tag = consumer.manualAck ? receiver.ledger.record(m, consumer: consumer) : 0
                if m.isRequest && !consumer.manualAck { openRequest(m, acceptedBy: receiver) }
                let channel = receiver.channel
                let size = MessageEncoder.size(tailCount: m.tail.count)
                m.tail.withUnsafeBytes { tail in
                    MessageEncoder.write(
                        into: channel.reserve(size), consumerID: consumer.id, deliveryTag: tag,
                        flags: m.redelivered ? AckFlag.redelivered : 0, tail: tail)
                }
                channel.commit(size)
                if !channel.isWritable { receiver.blockConsumers() }
            }
        }
        armExpiry(queue)
        if !queue.blockedPublishers.isEmpty && queue.readyMemory <= config.lowWatermarkBytes {
            releasePublishers(blockedOn: queue)
        }
    }

    private func armExpiry(_ queue: MessageQueue) {
        guard let at = queue.head?.expiresAt, at != 0, queue.expiryTimerAt == 0 || at < queue.expiryTimerAt else { return }
        queue.expiryTimerAt = at
        let now = monotonicNanos()
        let slot = Int(queue.slot)
        let identity = ObjectIdentifier(queue)
        scheduleTimer(afterNanos: at > now ? at - now : 0) { server in
            guard let q = server.topology.queues[slot], ObjectIdentifier(q) == identity, q.expiryTimerAt == at else { return }
            q.expiryTimerAt = 0
            server.dispatch(q)
        }
    }

    /// The connection drained below its low watermark: its consumers may take messages again.
    func unblockConsumers(of c: BrokerConnection) {
        guard c.consumersBlocked else { return }
        c.consumersBlocked = false
        for consumer in c.consumers.values { consumer.blocked = false }
        for consumer in c.consumers.values { dispatch(consumer.queue) }
    }

    // MARK: Acknowledgements

    func ack(from c: BrokerConnection, tag: UInt64, flags: UInt8) {
        if flags & AckFlag.multiple == 0 {
            // One tag: the per-message path of a work queue.
            let consumer: ConsumerRecord
            do {
                let (m, settled) = try c.ledger.settle(tag)
                consumer = settled
                if m.isRequest { openRequest(m, acceptedBy: c) }
            } catch {
                c.refuse(error, requestID: 0)
                return
            }
            let queue = consumer.queue
            queue.settled(consumer, acked: true)
            stats.acked &+= 1
            // Refill the window once per batch of frames read, not once per ACK: one dispatch then
            // writes all the messages the batch's acks made room for.
            if queue !== pendingDispatch {
                if let previous = pendingDispatch { dispatch(previous) }
                pendingDispatch = queue
            }
            return
        }
        touchedQueues.removeAll(keepingCapacity: true)
        do {
            try c.ledger.settle(tag, multiple: flags & AckFlag.multiple != 0) { m, consumer in
                if m.isRequest { openRequest(m, acceptedBy: c) }
                consumer.queue.settled(consumer, acked: true)
                stats.acked &+= 1
                if touchedQueues.last !== consumer.queue { touchedQueues.append(consumer.queue) }
            }
        } catch {
            c.refuse(error, requestID: 0)
            return
        }
        for q in touchedQueues { dispatch(q) }
    }

    /// Runs the dispatch that ACKs deferred (end of a read batch, or before anything that must see it).
    func flushPendingDispatch() {
        guard let queue = pendingDispatch else { return }
        pendingDispatch = nil
        // The queue may have been deleted by a later frame of the batch.
        if topology.queues[Int(queue.slot)] === queue { dispatch(queue) }
    }

    func nack(from c: BrokerConnection, tag: UInt64, flags: UInt8) {
        var back: [(MessageQueue, StoredMessage)] = []
        do {
            try c.ledger.settle(tag, multiple: flags & AckFlag.multiple != 0) { m, consumer in
                consumer.queue.settled(consumer, acked: false)
                back.append((consumer.queue, m))
            }
        } catch {
            c.refuse(error, requestID: 0)
            return
        }
        if flags & AckFlag.requeue != 0 {
            requeue(back)
        } else {
            for (q, m) in back { deadLetter(m, from: q, reason: "rejected") }
            for q in Self.distinct(back.map(\.0)) { dispatch(q) }
        }
    }

    /// Puts messages back at the head of their queues, in their original order, and dispatches.
    func requeue(_ messages: [(MessageQueue, StoredMessage)]) {
        for q in Self.distinct(messages.map(\.0)) {
            q.requeue(messages.filter { $0.0 === q }.map(\.1))
            dispatch(q)
        }
    }

    static func distinct(_ queues: [MessageQueue]) -> [MessageQueue] {
        var seen = Set<ObjectIdentifier>()
        return queues.filter { seen.insert(ObjectIdentifier($0)).inserted }
    }

    // MARK: Dead letters

    /// Republishes a rejected, expired or dropped message to its queue's dead-letter exchange, with
    /// headers saying why and from where; without one (or past a cycle limit) it is discarded.
    func deadLetter(_ m: StoredMessage, from queue: MessageQueue, reason: String) {
        guard let dlxName = queue.options.deadLetterExchange else { return }
        guard deadLetterDepth < 8 else {
            log.warning("dead letter from queue \"\(queue.name)\" discarded: dead-lettering cycles more than 8 deep")
            return
        }
        guard let dlx = topology.exchanges[dlxName] else {
            log.info("dead letter from queue \"\(queue.name)\" discarded: exchange \"\(dlxName)\" no longer exists")
            return
        }
        var parts = m.parts()
        parts.properties.headers["x-death-reason"] = reason
        parts.properties.headers["x-death-queue"] = queue.name
        parts.properties.headers["x-death-exchange"] = parts.exchange
        parts.properties.headers["x-death-routing-key"] = parts.routingKey
        // The expiration that may have ended it must not end it again at once in the next queue.
        parts.properties.expiration = nil
        let key = Array((queue.options.deadLetterRoutingKey ?? parts.routingKey).utf8)
        let properties = parts.properties.encoded()
        let name = Array(dlx.name.utf8)
        deadLetterDepth += 1
        defer { deadLetterDepth -= 1 }
        key.withUnsafeBytes { key in
            guard let targets = try? dlx.route(key), !targets.isEmpty else { return }
            stats.deadLettered &+= 1
            name.withUnsafeBytes { name in
                properties.withUnsafeBytes { properties in
                    parts.payload.withUnsafeBytes { payload in
                        _ = deliver(to: targets, from: nil, publisherID: parts.publisher, exchange: name,
                                    routingKey: key, properties: properties, payload: payload)
                    }
                }
            }
        }
    }
}
