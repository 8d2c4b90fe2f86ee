import EvbusWire

/// Where the access rules and quotas (docs/SECURITY.md) meet the requests: the refusals, and a
/// reload that takes back what the new rules no longer allow.
extension BrokerCore {
    /// An operation no rule grants: counted, logged with who asked, and returned to be sent as
    /// ERROR `access-refused` for that operation alone.
    func refusedAccess(_ s: ConnectionState, _ operation: String) -> WireError {
        stats.accessRefusals += 1
        let who = s.identity
        output.log(.warning, s.slot, event: "access-refused", "access refused: uid \(who.uid) gid \(who.gid) pid \(who.pid) may not \(operation)")
        return WireError(.accessRefused, "uid \(who.uid) may not \(operation): no access rule grants it")
    }

    /// A quota used up: counted, logged, returned to be sent as ERROR `quota-exceeded`.
    func refusedQuota(_ s: ConnectionState, _ reason: String) -> WireError {
        stats.quotaRefusals += 1
        output.log(.warning, s.slot, event: "quota-refused", "quota: \(reason) (pid \(s.identity.pid))")
        return WireError(.quotaExceeded, reason)
    }

    /// Checks a PUBLISH_TO against the grants: a request needs `request` on its routing key, a
    /// reply into an inbox needs an open request from that caller or a `respond` grant, anything
    /// else `publish` (topics of `amq.topic`) or `publishTo` (other exchanges).
    func mayPublishTo(_ s: ConnectionState, exchange: Exchange, key: UnsafeRawBufferPointer, isRequest: Bool, inboxCaller: UInt64?) -> WireError? {
        let grants = s.grants
        if grants.allowsEverything { return nil }
        let keyText = String(decoding: key, as: UTF8.self)
        if isRequest {
            return grants.mayRequest(keyText) ? nil : refusedAccess(s, "send requests to \"\(keyText)\"")
        }
        if let caller = inboxCaller {
            if grants.mayRespond || s.openRequests.contains(where: { $0.caller == caller }) { return nil }
            return refusedAccess(s, "reply into \(keyText) (it holds no request from that caller and no respond grant)")
        }
        if exchange === topology.defaultTopic {
            return grants.mayPublish(topic: key) ? nil : refusedAccess(s, "publish to topic \"\(keyText)\"")
        }
        return grants.mayPublishTo(exchange: exchange.name, key: keyText)
            ? nil : refusedAccess(s, "publish to exchange \"\(exchange.name)\" with key \"\(keyText)\"")
    }

    /// The access part of a cold request on exchanges and queues; nil if it may go ahead.
    /// (CANCEL is always allowed: giving up a consumer needs no permission.)
    func checkRouting(_ frame: Frame, from s: ConnectionState) -> WireError? {
        let grants = s.grants
        if grants.allowsEverything { return nil }
        switch frame {
        case .declareExchange(_, let name, _, let passive, _):
            return passive || grants.mayConfigure(name) ? nil : refusedAccess(s, "declare exchange \"\(name)\"")
        case .deleteExchange(_, let name, _):
            return grants.mayConfigure(name) ? nil : refusedAccess(s, "delete exchange \"\(name)\"")
        case .declareQueue(_, let name, _, let passive):
            // A server-named queue (empty name) is checked under its generated name when made.
            return passive || name.isEmpty || grants.mayConfigure(name) ? nil : refusedAccess(s, "declare queue \"\(name)\"")
        case .deleteQueue(_, let name, _, _):
            return grants.mayConfigure(name) ? nil : refusedAccess(s, "delete queue \"\(name)\"")
        case .purgeQueue(_, let name):
            return grants.mayConfigure(name) ? nil : refusedAccess(s, "purge queue \"\(name)\"")
        case .bind(_, let queue, let exchange, let key), .unbind(_, let queue, let exchange, let key):
            return grants.mayConfigure(queue) ? nil : refusedAccess(s, "bind queue \"\(queue)\" to \"\(exchange)\" with \"\(key)\"")
        case .consume(_, let queue, _, _):
            return grants.mayConsume(queue) ? nil : refusedAccess(s, "consume queue \"\(queue)\"")
        default:
            return nil
        }
    }

    /// A new queue counts against its declarer's quota; nil if it may be made.
    func checkQueueQuota(_ s: ConnectionState) -> WireError? {
        guard let limit = s.usage.quota?.queues, s.usage.queues.count >= limit else { return nil }
        return refusedQuota(s, "uid \(s.identity.uid) holds \(s.usage.queues.count) queues, the most its quota allows")
    }

    /// A message a queue refused because the uid that declared it holds its queued-bytes quota.
    func quotaRefusal(_ q: MessageQueue, _ publisher: ConnectionState) -> WireError {
        let owner = q.declaredBy
        return refusedQuota(publisher, "queue \"\(q.name)\" is full for its owner's quota: uid \(owner?.uid ?? 0) holds \(owner?.queuedBytes ?? 0) queued bytes, at most \(owner?.quota?.queuedBytes ?? 0); the message was refused there")
    }

    /// Puts new rules and quotas in force (SIGHUP). New operations follow them at once; every
    /// subscription and consumer they no longer allow is cancelled, its client told with CANCEL
    /// (the id) after an ERROR `access-refused` naming it. Returns how many were cancelled.
    @discardableResult
    public func installAccess(rules: [AccessRule]?, quotas: [Quota]) -> Int {
        access.install(rules: rules, quotas: quotas)
        var cancelled = 0
        for case let s? in sessions {
            s.grants = access.grants(for: s.identity)
            guard s.isOpen, !s.grants.allowsEverything else { continue }
            for (id, pattern) in Array(s.subscriptions) where !s.grants.maySubscribe(pattern) {
                _ = s.subscriptions.remove(id)
                s.usage.subscriptions -= 1
                s.slowStates[id] = nil
                topology.defaultTopic.topics.unsubscribe(pattern, RouteTarget(connection: s.slot, subscription: id))
                let error = refusedAccess(s, "subscribe to \"\(pattern)\" (after a reload of the rules)")
                send(.error(code: error.code, requestID: id, message: "subscription \(id) cancelled: \(error.message)"), to: s)
                send(.cancel(consumerID: id), to: s)
                cancelled += 1
            }
            for consumer in Array(s.consumers.values) where !s.grants.mayConsume(consumer.queue.name) {
                removeConsumer(consumer, of: s)
                let error = refusedAccess(s, "consume queue \"\(consumer.queue.name)\" (after a reload of the rules)")
                send(.error(code: error.code, requestID: consumer.id, message: "consumer \(consumer.id) cancelled: \(error.message)"), to: s)
                send(.cancel(consumerID: consumer.id), to: s)
                cancelled += 1
            }
        }
        output.log(.info, nil, event: "access-rules-installed", "access rules installed: \(rules.map { "\($0.count) rules" } ?? "no access section (everyone may do everything)"), \(quotas.count) quotas; \(cancelled) subscriptions and consumers cancelled")
        return cancelled
    }
}
