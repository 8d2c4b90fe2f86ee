import EvbusWire

/// Request/reply (PROTOCOL.md §5.13): inboxes, ROUTED counts, and telling callers when the
/// responder that accepted their request goes away before answering.
extension BrokerCore {
    /// A request must say where its reply goes and how to match it: a correlation id and a
    /// reply-to that names a live inbox or an existing queue. Returns the correlation id.
    func checkRequest(_ block: UnsafeRawBufferPointer) throws(WireError) -> String {
        let (idBytes, replyBytes) = MessageProperties.routingFields(block: block)
        guard let idBytes, !idBytes.isEmpty else {
            throw WireError(.invalidRequest, "a request needs a correlation id")
        }
        let correlationID = String(decoding: idBytes, as: UTF8.self)
        guard let replyBytes, !replyBytes.isEmpty else {
            throw WireError(.invalidRequest, "request \(correlationID) has no reply-to")
        }
        if let caller = Inbox.connectionID(replyBytes) {
            guard slotsByID[caller] != nil else {
                throw WireError(.invalidRequest, "request \(correlationID): reply-to amq.inbox.\(caller) is the inbox of no connected peer")
            }
        } else {
            let replyTo = String(decoding: replyBytes, as: UTF8.self)
            guard topology.hasQueue(replyTo) else {
                throw WireError(.invalidRequest, "request \(correlationID): reply-to \"\(replyTo)\" names no inbox and no queue")
            }
        }
        return correlationID
    }

    /// How many responders a request reaches: subscriptions and inboxes count one each; a queue
    /// counts if it has a consumer (a queue nobody consumes cannot answer).
    func responders(in targets: [RouteTarget]) -> Int {
        var n = 0
        for t in targets {
            if t.isQueue {
                if let q = topology.queues[Int(t.queueSlot)], !q.consumers.isEmpty { n += 1 }
            } else {
                n += 1
            }
        }
        return n
    }

    /// `responder` accepted (acknowledged, or received with auto-ack) a request: watch it until answered.
    func openRequest(_ m: StoredMessage, acceptedBy responder: ConnectionState) {
        m.tail.withUnsafeBytes { tail in
            // The tail was written by this process from checked input: it always parses, and
            // its properties block need not be checked again (only its first fields are read).
            guard let block = try? MessageTailView.propertiesAndPayload(ofTail: tail) else { return }
            let (id, replyTo) = MessageProperties.routingFields(block: block)
            guard let id, let replyTo, let caller = Inbox.connectionID(replyTo) else { return }
            responder.openRequests.append((caller, String(decoding: id, as: UTF8.self)))
        }
    }

    /// False when a request's reply-to is the inbox of a connection that has gone; true for a
    /// live one, and for a reply-to naming a queue (which outlives any caller).
    func callerIsConnected(_ m: StoredMessage) -> Bool {
        m.tail.withUnsafeBytes { tail in
            guard let block = try? MessageTailView.propertiesAndPayload(ofTail: tail),
                  let replyTo = MessageProperties.routingFields(block: block).replyTo,
                  let caller = Inbox.connectionID(replyTo) else { return true }
            guard let slot = slotsByID[caller], let c = session(slot) else { return false }
            return c.isOpen
        }
    }

    /// `responder` published into `caller`'s inbox: if that answers a request it accepted, close it.
    func answered(by responder: ConnectionState, caller: UInt64, properties: UnsafeRawBufferPointer) {
        guard let idBytes = MessageProperties.routingFields(block: properties).correlationID else { return }
        let id = String(decoding: idBytes, as: UTF8.self)
        if let i = responder.openRequests.firstIndex(where: { $0.caller == caller && $0.correlationID == id }) {
            responder.openRequests.remove(at: i)
        }
    }

    /// `responder` went: every caller still waiting on it is told now, not at its timeout.
    func abandonRequests(of responder: ConnectionState) {
        if !responder.openRequests.isEmpty {
            output.log(.debug, responder.slot, event: "requests-abandoned", "closed with \(responder.openRequests.count) requests unanswered")
        }
        for (caller, id) in responder.openRequests {
            guard let slot = slotsByID[caller], let c = session(slot), c.isOpen else { continue }
            send(.returned(
                code: .responderGone, exchange: "", routingKey: Inbox.name(connectionID: caller),
                properties: MessageProperties(correlationID: id), payload: []), to: c)
        }
        responder.openRequests.removeAll()
    }
}
