public import EvbusWire

/// Every exchange, queue and binding, with the rules for changing them (AMQP 0-9-1 semantics).
/// Pure: no sockets and no connections, only connection ids for exclusive ownership; the server
/// turns its answers into frames. Tested on its own (RoutingTableTests).
public final class Topology {
    /// The nameless direct exchange every queue is implicitly bound to by its name.
    public let defaultExchange: Exchange
    /// `amq.topic`: plain PUBLISH and SUBSCRIBE use it.
    public let defaultTopic: Exchange
    public private(set) var exchanges: [String: Exchange] = [:]
    /// Indexed by slot (route targets name queues by slot); freed slots are reused. Read for every
    /// message routed to a queue, one access at a time on the loop thread: the dynamic exclusivity
    /// check showed in the work-queue profile (perf), so it is off.
    @exclusivity(unchecked) public private(set) var queues: [MessageQueue?] = []
    private var queueSlots: [String: UInt32] = [:]
    private var freeQueueSlots: [UInt32] = []
    private var generatedNames: UInt64 = 0

    public init() {
        defaultExchange = Exchange(name: "", kind: .direct, builtIn: true, cacheCapacity: 1024)
        defaultTopic = Exchange(name: "amq.topic", kind: .topic, builtIn: true, cacheCapacity: 4096)
        exchanges[""] = defaultExchange
        exchanges["amq.topic"] = defaultTopic
        exchanges["amq.direct"] = Exchange(name: "amq.direct", kind: .direct, builtIn: true)
        exchanges["amq.fanout"] = Exchange(name: "amq.fanout", kind: .fanout, builtIn: true)
    }

    // MARK: Exchanges

    /// Creates an exchange, or checks that an existing one has the same kind and durability
    /// (idempotent). `passive` only checks that it exists.
    @discardableResult
    public func declareExchange(_ name: String, kind: ExchangeKind, passive: Bool = false, durable: Bool = false) throws(WireError) -> Exchange {
        if let existing = exchanges[name] {
            guard passive || existing.kind == kind else {
                throw WireError(.preconditionFailed, "exchange \"\(name)\" exists with kind \(existing.kind), not \(kind)")
            }
            guard passive || existing.builtIn || existing.durable == durable else {
                throw WireError(.preconditionFailed, "exchange \"\(name)\" exists \(existing.durable ? "durable" : "not durable"); declare it the same way or delete it first")
            }
            return existing
        }
        if passive { throw WireError(.unknownExchange, "no exchange named \"\(name)\"") }
        try NameRules.validate(name, "exchange")
        guard !name.hasPrefix(NameRules.reservedPrefix) else {
            throw WireError(.accessRefused, "exchange names starting with \"amq.\" are reserved for the broker")
        }
        let e = Exchange(name: name, kind: kind, durable: durable)
        exchanges[name] = e
        return e
    }

    /// Deletes an exchange and its bindings. `ifUnused` refuses while anything is bound to it.
    @discardableResult
    public func deleteExchange(_ name: String, ifUnused: Bool = false) throws(WireError) -> Exchange {
        let e = try exchange(name)
        guard !e.builtIn else { throw WireError(.accessRefused, "the built-in exchange \"\(name)\" cannot be deleted") }
        if ifUnused && !e.isUnused {
            throw WireError(.preconditionFailed, "exchange \"\(name)\" has \(e.bindings.count) bindings (if-unused)")
        }
        for b in e.bindings {
            queues[Int(b.queue)]?.bindings.remove(.init(exchange: name, key: b.key))
        }
        exchanges[name] = nil
        return e
    }

    public func exchange(_ name: String) throws(WireError) -> Exchange {
        guard let e = exchanges[name] else { throw WireError(.unknownExchange, "no exchange named \"\(name)\"") }
        return e
    }

    /// The hot path's lookup by raw name bytes (names up to 15 bytes need no allocation).
    @inline(__always)
    public func exchange(bytes: UnsafeRawBufferPointer) -> Exchange? {
        if bytes.isEmpty { return defaultExchange }
        return exchanges[String(decoding: bytes, as: UTF8.self)]
    }

    // MARK: Queues

    /// Creates a queue (an empty name gets a broker-made one), or checks that an existing one was
    /// declared with the same options (idempotent). `passive` only checks that it exists.
    /// `connection` is the declaring connection's id (the owner of an exclusive queue).
    public func declareQueue(
        _ name: String, options: QueueOptions, passive: Bool = false, connection: UInt64,
        requireDeadLetterExchange: Bool = true
    ) throws(WireError) -> MessageQueue {
        if let existing = try? queue(name, connection: connection) {
            guard passive || existing.options == options else {
                throw WireError(.preconditionFailed, "queue \"\(name)\" exists with other options (\(Self.describe(existing.options))); declare it with the same ones or delete it first")
            }
            return existing
        }
        if let slot = queueSlots[name], let q = queues[Int(slot)], q.owner != nil, q.owner != connection {
            throw WireError(.queueLocked, "queue \"\(name)\" is exclusive to another connection")
        }
        if passive { throw WireError(.unknownQueue, "no queue named \"\(name)\"") }
        if options.durable && options.exclusive {
            throw WireError(.preconditionFailed, "a queue cannot be both exclusive and durable: an exclusive queue goes with its connection")
        }
        var name = name
        if name.isEmpty {
            generatedNames += 1
            name = "amq.gen-\(connection)-\(generatedNames)"
        } else {
            try NameRules.validate(name, "queue")
            guard !name.hasPrefix(NameRules.reservedPrefix) else {
                throw WireError(.accessRefused, "queue names starting with \"amq.\" are reserved for the broker")
            }
        }
        if requireDeadLetterExchange, let dlx = options.deadLetterExchange, exchanges[dlx] == nil {
            throw WireError(.unknownExchange, "dead-letter exchange \"\(dlx)\" does not exist; declare it first")
        }
        let slot: UInt32
        if let reused = freeQueueSlots.popLast() {
            slot = reused
        } else {
            slot = UInt32(queues.count)
            queues.append(nil)
        }
        let q = MessageQueue(name: name, slot: slot, options: options, owner: options.exclusive ? connection : nil)
        queues[Int(slot)] = q
        queueSlots[name] = slot
        defaultExchange.bindImplicitly(queue: slot, name: name)
        return q
    }

    /// Finds a queue the connection may use (exclusive queues belong to their declaring connection).
    public func queue(_ name: String, connection: UInt64) throws(WireError) -> MessageQueue {
        guard let slot = queueSlots[name], let q = queues[Int(slot)] else {
            throw WireError(.unknownQueue, "no queue named \"\(name)\"")
        }
        if let owner = q.owner, owner != connection {
            throw WireError(.queueLocked, "queue \"\(name)\" is exclusive to another connection")
        }
        return q
    }

    public func hasQueue(_ name: String) -> Bool { queueSlots[name] != nil }

    /// Checks `if-unused` / `if-empty` for deleting. The server then cancels consumers and calls `remove`.
    public func checkDeletable(_ q: MessageQueue, ifUnused: Bool, ifEmpty: Bool) throws(WireError) {
        if ifUnused && !q.consumers.isEmpty {
            throw WireError(.preconditionFailed, "queue \"\(q.name)\" has \(q.consumers.count) consumers (if-unused)")
        }
        if ifEmpty && q.messageCount > 0 {
            throw WireError(.preconditionFailed, "queue \"\(q.name)\" has \(q.messageCount) messages (if-empty)")
        }
    }

    /// Forgets a queue and its bindings. Its consumers must already be gone.
    public func remove(_ q: MessageQueue) {
        for b in q.bindings { exchanges[b.exchange]?.unbindAll(queue: q.slot) }
        q.bindings.removeAll()
        defaultExchange.unbindImplicitly(name: q.name)
        queueSlots[q.name] = nil
        queues[Int(q.slot)] = nil
        freeQueueSlots.append(q.slot)
    }

    // MARK: Bindings

    /// Binds; returns whether the binding is new (binding twice is a no-op).
    @discardableResult
    public func bind(queue: String, exchange: String, key: String, connection: UInt64) throws(WireError) -> Bool {
        let (q, e) = try bindingEnds(queue: queue, exchange: exchange, connection: connection)
        try e.bind(queue: q.slot, key: key)
        return q.bindings.insert(.init(exchange: exchange, key: key)).inserted
    }

    /// Unbinds; returns whether there was such a binding.
    @discardableResult
    public func unbind(queue: String, exchange: String, key: String, connection: UInt64) throws(WireError) -> Bool {
        let (q, e) = try bindingEnds(queue: queue, exchange: exchange, connection: connection)
        e.unbind(queue: q.slot, key: key)
        return q.bindings.remove(.init(exchange: exchange, key: key)) != nil
    }

    private func bindingEnds(queue: String, exchange: String, connection: UInt64) throws(WireError) -> (MessageQueue, Exchange) {
        guard !exchange.isEmpty else {
            throw WireError(.accessRefused, "the default exchange binds every queue by its name; it takes no explicit bindings")
        }
        let q = try self.queue(queue, connection: connection)
        return (q, try self.exchange(exchange))
    }

    // MARK: Listing

    public func summaries() -> (exchanges: [ExchangeSummary], queues: [QueueSummary]) {
        let ex = exchanges.values.sorted { $0.name < $1.name }.map { e in
            ExchangeSummary(
                name: e.name, kind: e.kind,
                bindings: e.bindings.compactMap { b in
                    queues[Int(b.queue)].map { ExchangeSummary.Binding(queue: $0.name, key: b.key) }
                }.sorted { ($0.queue, $0.key) < ($1.queue, $1.key) },
                subscriptions: UInt32(clamping: e.topics.subscriptionCount), builtIn: e.builtIn, durable: e.durable)
        }
        let qs = queues.compactMap { $0 }.sorted { $0.name < $1.name }.map { q in
            QueueSummary(
                name: q.name, exclusive: q.options.exclusive, autoDelete: q.options.autoDelete,
                ready: UInt32(clamping: q.messageCount), readyBytes: q.messageBytes, unacked: UInt32(clamping: q.unacked),
                consumers: UInt32(clamping: q.consumers.count), published: q.published, delivered: q.delivered,
                acked: q.acked, publishRate: q.rates.publish, deliverRate: q.rates.deliver, ackRate: q.rates.ack,
                durable: q.options.durable, diskBytes: q.diskBytes)
        }
        return (ex, qs)
    }

    public var liveQueues: [MessageQueue] { queues.compactMap { $0 } }

    func sampleRates(elapsedNanos: UInt64) {
        for case let q? in queues { q.sampleRates(elapsedNanos: elapsedNanos) }
    }

    static func describe(_ o: QueueOptions) -> String {
        var parts: [String] = []
        if o.durable { parts.append("durable") }
        if o.exclusive { parts.append("exclusive") }
        if o.autoDelete { parts.append("auto-delete") }
        if let v = o.maxLength { parts.append("max-length \(v)") }
        if let v = o.maxBytes { parts.append("max-bytes \(v)") }
        if o.maxLength != nil || o.maxBytes != nil { parts.append("overflow \(o.overflow)") }
        if let v = o.messageTTL { parts.append("ttl \(v) ms") }
        if let v = o.deadLetterExchange { parts.append("dead-letter-exchange \"\(v)\"") }
        if let v = o.deadLetterRoutingKey { parts.append("dead-letter-routing-key \"\(v)\"") }
        return parts.isEmpty ? "defaults" : parts.joined(separator: ", ")
    }
}
