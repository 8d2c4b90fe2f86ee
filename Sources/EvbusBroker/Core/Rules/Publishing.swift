import EvbusWire

/// The hot path: a PUBLISH or PUBLISH_TO in, one DELIVER per matching subscription and one queued
/// message per matching queue out; mandatory returns and publisher confirms.
extension BrokerCore {
    /// PUBLISH: a topic on the default topic exchange.
    @inline(__always)
    func publish(_ view: PublishView, from publisher: ConnectionState) {
        let targets: [RouteTarget]
        do {
            targets = try topology.defaultTopic.topics.route(view.topic)
        } catch {
            refuse(error, requestID: 0, to: publisher)
            return
        }
        // Inboxes are reached through the default exchange; a topic that looks like one is a
        // mistake worth saying (one byte compared for every other topic).
        if view.topic.first == Inbox.prefixFirstByte, Inbox.hasPrefix(view.topic) {
            refuse(WireError(.invalidTopic, "topic \"\(String(decoding: view.topic, as: UTF8.self))\" names an inbox; a reply goes to the default exchange (PUBLISH_TO \"\" with the inbox name as routing key)"), requestID: 0, to: publisher)
            return
        }
        guard publisher.grants.mayPublish(topic: view.topic) else {
            refuse(refusedAccess(publisher, "publish to topic \"\(String(decoding: view.topic, as: UTF8.self))\""), requestID: 0, to: publisher)
            return
        }
        stats.published &+= 1
        publisher.published &+= 1
        if targets.isEmpty {
            stats.unroutable &+= 1
            return
        }
        _ = defaultTopicName.withUnsafeBytes { name in
            deliver(to: targets, from: publisher, publisherID: publisher.id, exchange: name, routingKey: view.topic,
                    properties: view.properties, payload: view.payload)
        }
        if isPersisting {
            recordedMessage = false
            pagedOutMessage = false
            if let q = storageRefusedBy {
                storageRefusedBy = nil
                store!.refused &+= 1
                refuse(durableRefusal("message into durable queue \"\(q.name)\"")
                    ?? WireError(.storageFailed, "queue \"\(q.name)\" cannot persist the message"), requestID: 0, to: publisher)
            }
        }
        if let q = quotaRefusedBy {
            quotaRefusedBy = nil
            refuse(quotaRefusal(q, publisher), requestID: 0, to: publisher)
        }
    }

    /// PUBLISH_TO: an exchange and routing key, optionally mandatory, confirmed, or a request.
    /// Throws only for an exchange name that is not UTF-8 (a malformed frame: the connection goes).
    func publishTo(_ view: PublishToView, from publisher: ConnectionState) throws(WireError) {
        var sequence: UInt64 = 0
        if view.flags & PublishFlag.confirm != 0 {
            publisher.confirmSequence += 1
            sequence = publisher.confirmSequence
        }
        guard let exchange = topology.exchange(bytes: view.exchange) else {
            // Only here, off the hot path: a name that matched an exchange is valid UTF-8.
            guard let name = String(validating: view.exchange, as: UTF8.self) else {
                throw WireError(.malformedFrame, "PUBLISH_TO's exchange name is not valid UTF-8")
            }
            refusePublish(publisher, sequence, WireError(.unknownExchange, "no exchange named \"\(name)\"; the message was not routed"), view)
            return
        }
        let isRequest = view.flags & PublishFlag.request != 0
        let inboxCaller = exchange === topology.defaultExchange ? Inbox.connectionID(view.routingKey) : nil
        if !publisher.grants.allowsEverything,
            let refusal = mayPublishTo(publisher, exchange: exchange, key: view.routingKey, isRequest: isRequest, inboxCaller: inboxCaller)
        {
            refusePublish(publisher, sequence, refusal, view)
            return
        }
        let targets: [RouteTarget]
        if let caller = inboxCaller {
            if let slot = slotsByID[caller] {
                // Reused one-element route: a reply costs no array allocation.
                inboxRoute[0] = RouteTarget(connection: slot, subscription: Inbox.subscriptionID)
                targets = inboxRoute
            } else {
                targets = []
            }
            if !publisher.openRequests.isEmpty { answered(by: publisher, caller: caller, properties: view.properties) }
        } else {
            // A topic exchange checks its keys as it routes; the others compare bytes, so check here.
            if exchange.kind != .topic, let problem = Self.problem(withKey: view.routingKey) {
                refusePublish(publisher, sequence, WireError(.invalidTopic, "routing key \(problem); the message was not routed"), view)
                return
            }
            do {
                targets = try exchange.route(view.routingKey)
            } catch {
                refusePublish(publisher, sequence, error, view)
                return
            }
        }
        if isRequest {
            let correlationID: String
            do {
                correlationID = try checkRequest(view.properties)
            } catch {
                refusePublish(publisher, sequence, error, view)
                return
            }
            let reached = responders(in: targets)
            if reached == 0 || view.flags & PublishFlag.reportReached != 0 {
                send(.routed(reached: UInt32(reached), correlationID: correlationID), to: publisher)
            }
            if reached == 0 {
                // Nobody can answer: say so now (ROUTED 0) instead of leaving it to time out in a queue.
                stats.published &+= 1
                publisher.published &+= 1
        publisher.published &+= 1
                stats.unroutable &+= 1
                if sequence != 0 { publisher.confirmPending = sequence }
                return
            }
        }
        stats.published &+= 1
        publisher.published &+= 1
        if targets.isEmpty {
            stats.unroutable &+= 1
            if view.flags & PublishFlag.mandatory != 0 {
                stats.returned &+= 1
                send(.returned(
                    code: .unroutable, exchange: exchange.name, routingKey: String(decoding: view.routingKey, as: UTF8.self),
                    properties: MessageProperties.decode(block: view.properties), payload: Array(view.payload)), to: publisher)
            }
        } else {
            let rejectedBy = deliver(
                to: targets, from: publisher, publisherID: publisher.id, exchange: view.exchange,
                routingKey: view.routingKey, properties: view.properties, payload: view.payload, isRequest: isRequest)
            let overQuota = quotaRefusedBy
            quotaRefusedBy = nil
            if recordedMessage {
                recordedMessage = false
                // A paged-out message exists nowhere but on disk: its confirm waits for the sync
                // in either mode, so a failed write can only ever nack it.
                if store!.confirmsWaitForSync || pagedOutMessage { publisher.durableLink().storeNeeded = store!.openBatch }
                pagedOutMessage = false
            }
            if let q = storageRefusedBy {
                storageRefusedBy = nil
                store!.refused &+= 1
                refusePublish(publisher, sequence, durableRefusal("message into durable queue \"\(q.name)\"")
                    ?? WireError(.storageFailed, "queue \"\(q.name)\" cannot persist the message"), view)
                return
            }
            if let q = overQuota {
                refusePublish(publisher, sequence, quotaRefusal(q, publisher), view)
                return
            }
            if let full = rejectedBy {
                stats.rejectedPublishes &+= 1
                refusePublish(publisher, sequence, WireError(.queueFull,
                    "queue \"\(full.name)\" is full (\(Topology.describe(full.options))); the message was refused there"), view)
                return
            }
        }
        if sequence != 0 { publisher.confirmPending = sequence }
    }

    /// What is wrong with a direct or fanout routing key (as PROTOCOL.md §5.10 has them: at most
    /// 255 bytes of UTF-8), or nil. ASCII keys, the usual ones, cost one pass over their bytes.
    @inline(__always)
    static func problem(withKey key: UnsafeRawBufferPointer) -> String? {
        if key.count > WireFormat.maxTopicBytes { return "is \(key.count) bytes; at most \(WireFormat.maxTopicBytes)" }
        for b in key where b >= 0x80 {
            return String(validating: key, as: UTF8.self) == nil ? "is not valid UTF-8" : nil
        }
        return nil
    }

    /// A publish that did not go (everywhere): an ERROR frame saying why, and a nack when confirmed.
    /// A refused request (flag 0x04, with a correlation id) comes back as a RETURN instead, which
    /// names it: its caller fails at once rather than waiting for its deadline (PROTOCOL.md §5.13).
    private func refusePublish(_ publisher: ConnectionState, _ sequence: UInt64, _ error: WireError, _ view: PublishToView) {
        // A malformed request (`invalid-request`: no correlation id, or no reply-to to trust) stays an ERROR.
        if view.flags & PublishFlag.request != 0, error.code != .invalidRequest,
            MessageProperties.routingFields(block: view.properties).correlationID?.isEmpty == false
        {
            var properties = MessageProperties.decode(block: view.properties)
            properties.headers[RefusedRequest.reasonHeader] = error.message
            stats.rejectedRequests &+= 1  // as `refuse` counts an ERROR
            output.log(.info, publisher.slot, event: "request-refused", "refused request \(properties.correlationID ?? ""): \(error)")
            send(.returned(
                code: error.code, exchange: String(decoding: view.exchange, as: UTF8.self),
                routingKey: String(decoding: view.routingKey, as: UTF8.self), properties: properties, payload: Array(view.payload)),
                to: publisher)
        } else {
            refuse(error, requestID: 0, to: publisher)
        }
        if sequence != 0 {
            flushConfirms(publisher)
            if !publisher.hasConfirmWaits {
                sendNack(sequence, to: publisher)
            } else {
                waitForStore(publisher, sequence: sequence, batch: 0, nack: true)
            }
        }
    }

    /// Sends one CONFIRM(multiple) for every publish confirmed since the last one; behind the disk
    /// when one of them (or an earlier one still waiting) has records not yet synced.
    func flushConfirms(_ s: ConnectionState) {
        guard s.confirmPending != 0 else { return }
        if let link = s.durable, link.storeNeeded != 0 || !link.confirmWaits.isEmpty {
            waitForStore(s, sequence: s.confirmPending, batch: link.storeNeeded, nack: false)
            link.storeNeeded = 0
        } else {
            sendConfirm(s.confirmPending, to: s)
        }
        s.confirmPending = 0
    }

    /// Hands one message to every target: subscriptions get a DELIVER written at once, queues get a
    /// stored copy (one allocation shared by all of them) and dispatch to their consumers.
    /// `publisher` is nil for dead letters (nobody to slow down). Returns the first queue that
    /// refused the message (a full `reject-publish` queue), if any.
    @inline(__always)
    func deliver(
        to targets: [RouteTarget], from publisher: ConnectionState?, publisherID: UInt64,
        exchange: UnsafeRawBufferPointer, routingKey: UnsafeRawBufferPointer, properties: UnsafeRawBufferPointer,
        payload: UnsafeRawBufferPointer, isRequest: Bool = false
    ) -> MessageQueue? {
        var rejectedBy: MessageQueue?
        var stored: StoredMessage?
        let deliverSize = DeliverEncoder.size(
            topicCount: routingKey.count, propertiesCount: properties.count, payloadCount: payload.count)
        for target in targets {
            if target.isQueue {
                guard let queue = topology.queues[Int(target.queueSlot)] else { continue }
                if stored == nil {
                    publisher?.publishedToQueue = true
                    stored = StoredMessage(
                        publisher: publisherID, exchange: exchange, routingKey: routingKey, properties: properties,
                        payload: payload, expiresAt: 0)
                    stored!.isRequest = isRequest
                }
                // Before anything is recorded: a refused message must leave no trace in the log.
                if let owner = queue.declaredBy, let limit = owner.quota?.queuedBytes, owner.queuedBytes >= limit {
                    if quotaRefusedBy == nil { quotaRefusedBy = queue }
                    continue
                }
                var message = stored!
                message.expiresAt = expiry(for: queue, properties: properties)
                if queue.durableID != 0 && isPersisting {
                    let persistent = MessageProperties.isPersistent(block: properties)
                    // Into a queue paging to disk, a transient message goes to disk too (order).
                    if persistent || queue.paged != nil {
                        guard store!.healthy else {
                            if storageRefusedBy == nil { storageRefusedBy = queue }
                            continue
                        }
                        if pagesOut(queue, adding: message) {
                            pageOut(message, into: queue, transient: !persistent)
                            recordedMessage = true
                            pagedOutMessage = true
                            continue
                        }
                        if queue.options.overflow == .rejectPublish && queue.wouldOverflow(adding: message) {
                            if rejectedBy == nil { rejectedBy = queue }
                            continue
                        }
                        message.storeID = recordMessage(message, into: queue)
                        recordedMessage = true
                    }
                }
                if !enqueue(message, into: queue) && rejectedBy == nil { rejectedBy = queue }
                if queue.readyMemory > settings.highWatermarkBytes, let publisher { queueOverHighWatermark(queue, publisher: publisher) }
                continue
            }
            withSession(target.connection) { receiver in
                guard receiver.isOpen else { return }
                if receiver.outputFull && slowPolicy(of: target.subscription, receiver) == .drop {
                    stats.dropped &+= 1
                    receiver.slowStates[target.subscription, default: SubscriptionSlowState()].dropped &+= 1
                    return
                }
                if receiver.lastSender != publisherID { announceSender(publisherID, publisher: publisher, to: receiver) }
                DeliverEncoder.write(
                    into: reserve(receiver.slot, deliverSize), subscriptionID: target.subscription, publisher: publisherID,
                    topic: routingKey, properties: properties, payload: payload)
                let writable = commit(receiver.slot, deliverSize)
                stats.delivered &+= 1
                receiver.delivered &+= 1
                if !writable { overHighWatermark(receiver, publisher: publisher, subscription: target.subscription) }
            }
        }
        return rejectedBy
    }
}
