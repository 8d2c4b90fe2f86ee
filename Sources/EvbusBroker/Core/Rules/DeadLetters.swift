import EvbusWire

/// Dead letters (PROTOCOL.md §5.11): rejected, expired and dropped messages republished to their
/// queue's dead-letter exchange.
extension BrokerCore {
    /// Republishes a rejected, expired or dropped message to its queue's dead-letter exchange, with
    /// headers saying why and from where; without one (or past a cycle limit) it is discarded.
    func deadLetter(_ m: StoredMessage, from queue: MessageQueue, reason: String) {
        recordSettled(m, from: queue)
        guard let dlxName = queue.options.deadLetterExchange else { return }
        guard deadLetterDepth < 8 else {
            output.log(.warning, nil, "dead letter from queue \"\(queue.name)\" discarded: dead-lettering cycles more than 8 deep")
            return
        }
        guard let dlx = topology.exchanges[dlxName] else {
            output.log(.info, nil, "dead letter from queue \"\(queue.name)\" discarded: exchange \"\(dlxName)\" no longer exists")
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
                        recordedMessage = false
                        pagedOutMessage = false
                        if let q = storageRefusedBy {
                            storageRefusedBy = nil
                            output.log(.warning, nil, "dead letter for durable queue \"\(q.name)\" kept nowhere: the data directory cannot be written")
                        }
                    }
                }
            }
        }
    }
}
