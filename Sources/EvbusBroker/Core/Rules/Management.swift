import EvbusWire

/// Declaring, binding, consuming and deleting: the cold requests on exchanges and queues.
/// Each either succeeds and is answered (OK / QUEUE_OK) or refuses that one request.
extension BrokerCore {
    func handleRouting(_ frame: Frame, from c: ConnectionState) {
        if let refusal = checkRouting(frame, from: c) {
            return refuse(refusal, requestID: Self.requestID(of: frame), to: c)
        }
        switch frame {
        case .declareExchange(let id, let name, let kind, let passive, let durable):
            answer(c, id) { () throws(WireError) in
                let existed = topology.exchanges[name] != nil
                if durable && !existed && !passive, let refusal = durableRefusal("declaring durable exchange \"\(name)\"") { throw refusal }
                let e = try topology.declareExchange(name, kind: kind, passive: passive, durable: durable)
                if !existed { recordExchange(e) }
                return .ok(requestID: id)
            }
        case .deleteExchange(let id, let name, let ifUnused):
            answer(c, id) { () throws(WireError) in
                let e = try topology.deleteExchange(name, ifUnused: ifUnused)
                recordExchangeDeleted(e)
                return .ok(requestID: id)
            }
        case .declareQueue(let id, let name, let options, let passive):
            answer(c, id) { () throws(WireError) in
                if options.durable && !passive && !topology.hasQueue(name),
                    let refusal = durableRefusal("declaring durable queue \"\(name)\"")
                {
                    throw refusal
                }
                let isNew = !passive && !topology.hasQueue(name)
                if isNew, let refusal = checkQueueQuota(c) { throw refusal }
                let q = try topology.declareQueue(name, options: options, passive: passive, connection: c.id)
                if isNew && name.isEmpty && !c.grants.mayConfigure(q.name) {
                    topology.remove(q)
                    throw refusedAccess(c, "declare queue \"\(q.name)\" (a server-named queue)")
                }
                if isNew { countQueue(q, for: c) }
                if q.options.durable && q.durableID == 0 { recordQueue(q) }
                return .queueOK(requestID: id, info: QueueInfo(
                    name: q.name, messageCount: UInt32(clamping: q.messageCount), consumerCount: UInt32(clamping: q.consumers.count)))
            }
        case .deleteQueue(let id, let name, let ifUnused, let ifEmpty):
            answer(c, id) { () throws(WireError) in
                let q = try topology.queue(name, connection: c.id)
                try topology.checkDeletable(q, ifUnused: ifUnused, ifEmpty: ifEmpty)
                let count = q.messageCount
                deleteQueue(q, closing: nil)
                return .queueOK(requestID: id, info: QueueInfo(name: name, messageCount: UInt32(clamping: count), consumerCount: 0))
            }
        case .purgeQueue(let id, let name):
            answer(c, id) { () throws(WireError) in
                let q = try topology.queue(name, connection: c.id)
                let count = q.purge { recordSettled($0, from: q) } + purgePaged(q)
                releasePublishers(blockedOn: q)
                return .queueOK(requestID: id, info: QueueInfo(name: name, messageCount: UInt32(clamping: count), consumerCount: UInt32(clamping: q.consumers.count)))
            }
        case .bind(let id, let queue, let exchange, let key):
            answer(c, id) { () throws(WireError) in
                if try topology.bind(queue: queue, exchange: exchange, key: key, connection: c.id),
                    let q = try? topology.queue(queue, connection: c.id)
                {
                    recordBinding(queue: q, exchange: exchange, key: key, bound: true)
                }
                return .ok(requestID: id)
            }
        case .unbind(let id, let queue, let exchange, let key):
            answer(c, id) { () throws(WireError) in
                if try topology.unbind(queue: queue, exchange: exchange, key: key, connection: c.id),
                    let q = try? topology.queue(queue, connection: c.id)
                {
                    recordBinding(queue: q, exchange: exchange, key: key, bound: false)
                }
                return .ok(requestID: id)
            }
        case .consume(let id, let queue, let flags, let prefetch):
            do {
                let q = try consume(c, id: id, queue: queue, manualAck: flags & ConsumeFlag.manualAck != 0, prefetch: Int(prefetch))
                // The OK goes out before the first MESSAGE.
                send(.ok(requestID: id), to: c)
                dispatch(q)
            } catch {
                refuse(error, requestID: id, to: c)
            }
        case .cancel(let id):
            answer(c, id) { () throws(WireError) in
                guard let consumer = c.consumers[id] else {
                    throw WireError(.unknownConsumer, "no consumer with id \(id) on this connection")
                }
                removeConsumer(consumer, of: c)
                return .ok(requestID: id)
            }
        default:
            preconditionFailure("\(frame.type.name) is not a routing request")
        }
    }

    /// The request id a routing request is answered under.
    static func requestID(of frame: Frame) -> UInt32 {
        switch frame {
        case .declareExchange(let id, _, _, _, _), .deleteExchange(let id, _, _), .declareQueue(let id, _, _, _),
            .deleteQueue(let id, _, _, _), .purgeQueue(let id, _), .bind(let id, _, _, _), .unbind(let id, _, _, _),
            .consume(let id, _, _, _), .cancel(let id):
            id
        default: 0
        }
    }

    /// A queue `c` made counts against its uid's quota until it goes.
    func countQueue(_ q: MessageQueue, for c: ConnectionState) {
        q.declaredBy = c.usage
        c.usage.queues.append(q)
    }

    // MARK: Consumers

    private func consume(_ c: ConnectionState, id: UInt32, queue name: String, manualAck: Bool, prefetch: Int) throws(WireError) -> MessageQueue {
        guard id != 0 else {
            throw WireError(.duplicateSubscription, "consumer id 0 is reserved (it would be confused with the inbox)")
        }
        guard !c.subscriptions.contains(id) && c.consumers[id] == nil else {
            throw WireError(.duplicateSubscription, "id \(id) is already in use by a subscription or consumer on this connection")
        }
        let q = try topology.queue(name, connection: c.id)
        let consumer = ConsumerRecord(
            connectionSlot: c.slot, connectionID: c.id, id: id, manualAck: manualAck, prefetch: prefetch, queue: q)
        consumer.blocked = c.outputFull
        c.consumers[id] = consumer
        q.add(consumer)
        return q
    }

    /// Cancels a consumer: its unacknowledged messages go back to the head of the queue (flagged
    /// redelivered) and an auto-delete queue left without consumers is deleted.
    func removeConsumer(_ consumer: ConsumerRecord, of c: ConnectionState) {
        let back = c.ledger.takeAll(of: consumer)
        for s in back { s.consumer.queue.settled(s.consumer, acked: false) }
        c.consumers[consumer.id] = nil
        let q = consumer.queue
        q.remove(consumer)
        q.requeue(back.map(\.message))
        if q.options.autoDelete && q.consumers.isEmpty && q.hadConsumer {
            output.log(.debug, c.slot, event: "queue-auto-deleted", "auto-delete queue \"\(q.name)\" lost its last consumer; deleting it")
            deleteQueue(q, closing: c)
        } else {
            dispatch(q)
        }
    }

    /// Deletes a queue: its other consumers are told (CANCEL from the broker), its messages and
    /// unacknowledged deliveries are discarded, its bindings removed. `closing` is a connection
    /// being torn down, which is not sent anything.
    func deleteQueue(_ q: MessageQueue, closing: ConnectionState?) {
        var gone: [StoredMessage] = []
        for consumer in q.consumers {
            guard let owner = session(consumer.connectionSlot) else { continue }
            for s in owner.ledger.takeAll(of: consumer) {
                s.consumer.queue.settled(s.consumer, acked: false)
                if s.message.storeID != 0 { gone.append(s.message) }
            }
            owner.consumers[consumer.id] = nil
            if owner !== closing && owner.isOpen { send(.cancel(consumerID: consumer.id), to: owner) }
        }
        for consumer in q.consumers { q.remove(consumer) }
        _ = q.purge { if $0.storeID != 0 { gone.append($0) } }
        endPaging(q)  // its records go with it: recovery drops the messages of a deleted queue
        recordQueueDeleted(q, messages: gone)
        releasePublishers(blockedOn: q)
        topology.remove(q)
        if let usage = q.declaredBy {
            usage.queues.removeAll { $0 === q }
            q.declaredBy = nil
            access.release(usage)
        }
    }

    /// A connection went: everything its consumers held goes back to the head of its queues in
    /// delivery order (flagged redelivered), auto-delete queues it was the last consumer of and
    /// exclusive queues it owned are deleted.
    func releaseQueues(of c: ConnectionState) {
        let back = c.ledger.takeAll(of: nil)
        for s in back { s.consumer.queue.settled(s.consumer, acked: false) }
        let consumers = Array(c.consumers.values)
        c.consumers.removeAll()
        for consumer in consumers { consumer.queue.remove(consumer) }
        for q in Self.distinct(back.map(\.consumer.queue)) {
            q.requeue(back.filter { $0.consumer.queue === q }.map(\.message))
        }
        for q in Self.distinct(consumers.map(\.queue)) {
            if q.options.autoDelete && q.consumers.isEmpty && q.hadConsumer {
                deleteQueue(q, closing: c)
            } else {
                dispatch(q)
            }
        }
        for q in topology.liveQueues where q.owner == c.id { deleteQueue(q, closing: c) }
    }
}
