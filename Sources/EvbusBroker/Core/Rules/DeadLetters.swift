import EvbusWire

/// Dead letters (PROTOCOL.md §5.11): rejected, expired and dropped messages republished to their
/// queue's dead-letter exchange.
extension BrokerCore {
    /// How many times a message may be dead-lettered: a cycle of queues is cut after this many hops.
    static var maxDeadLetterHops: Int { 8 }

    /// Republishes a rejected, expired or dropped message to its queue's dead-letter exchange, with
    /// headers saying why and from where (PROTOCOL.md §5.11); without one, or after
    /// `maxDeadLetterHops` (the count travels with the message, so a cycle through timers or NACKs
    /// is cut too), it is discarded.
    func deadLetter(_ m: StoredMessage, from queue: MessageQueue, reason: String) {
        recordSettled(m, from: queue)
        guard let dlxName = queue.options.deadLetterExchange else { return }
        guard let dlx = topology.exchanges[dlxName] else {
            output.log(.info, nil, event: "dead-letter-discarded", "dead letter from queue \"\(queue.name)\" discarded: exchange \"\(dlxName)\" no longer exists")
            return
        }
        var parts = m.parts()
        let hops = Int(parts.properties.headers["x-death-count"] ?? "") ?? 0
        guard hops < Self.maxDeadLetterHops else {
            stats.deadLetterCyclesCut &+= 1
            output.log(.warning, nil, event: "dead-letter-discarded", "dead letter from queue \"\(queue.name)\" discarded: dead-lettered \(hops) times already (a cycle of dead-letter exchanges; first from queue \"\(parts.properties.headers["x-death-queue"] ?? queue.name)\")")
            return
        }
        // The first death stays (where it was first published, and why it first died); the last
        // one and the count are updated with every hop.
        if parts.properties.headers["x-death-queue"] == nil {
            parts.properties.headers["x-death-reason"] = reason
            parts.properties.headers["x-death-queue"] = queue.name
            parts.properties.headers["x-death-exchange"] = parts.exchange
            parts.properties.headers["x-death-routing-key"] = parts.routingKey
        }
        parts.properties.headers["x-last-death-reason"] = reason
        parts.properties.headers["x-last-death-queue"] = queue.name
        parts.properties.headers["x-death-count"] = String(hops + 1)
        // The expiration that may have ended it must not end it again at once in the next queue.
        parts.properties.expiration = nil
        let key = Array((queue.options.deadLetterRoutingKey ?? parts.routingKey).utf8)
        let properties = parts.properties.encoded()
        let name = Array(dlx.name.utf8)
        key.withUnsafeBytes { key in
            guard let targets = try? dlx.route(key), !targets.isEmpty else { return }
            stats.deadLettered &+= 1
            name.withUnsafeBytes { name in
                properties.withUnsafeBytes { properties in
                    parts.payload.withUnsafeBytes { payload in
                        _ = deliver(to: targets, from: nil, publisherID: parts.publisher, exchange: name,
                                    routingKey: key, properties: properties, payload: payload)
                        recordedMessage = false
                        pagedOutMessage = false
                        if let q = storageRefusedBy {
                            storageRefusedBy = nil
                            output.log(.warning, nil, event: "dead-letter-discarded", "dead letter for durable queue \"\(q.name)\" kept nowhere: the data directory cannot be written")
                        }
                        if let q = quotaRefusedBy {
                            quotaRefusedBy = nil
                            stats.quotaRefusals &+= 1
                            output.log(.warning, nil, event: "dead-letter-discarded", "dead letter for queue \"\(q.name)\" discarded: its owner uid \(q.declaredBy?.uid ?? 0) is at its queuedBytes quota")
                        }
                    }
                }
            }
        }
    }
}
