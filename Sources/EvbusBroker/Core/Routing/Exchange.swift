public import EvbusWire

/// An exchange: its kind and bindings, and the route from a routing key to queue targets.
/// Pure: targets name queues by slot; the server enqueues.
public final class Exchange {
    public let name: String
    public let kind: ExchangeKind
    /// Created by the broker (the default exchange and `amq.*`): cannot be deleted or redeclared
    /// with another kind.
    public let builtIn: Bool
    /// Survives a restart (recorded in the persistence log); built-in exchanges always exist.
    public let durable: Bool
    /// Explicit bindings (queue slot, key), for listing, `if-unused` and cleanup.
    public private(set) var bindings: Set<Binding> = []

    // `topics` and `directCache` are read for every message routed through this exchange, by one
    // access at a time on the loop thread; their dynamic exclusivity checks showed in the pub/sub
    // profile (perf), so they are off.

    /// Topic: the pattern table (the default topic exchange also holds plain subscriptions here).
    @exclusivity(unchecked) public var topics: TopicRouter
    /// Direct: exact key → queues, with a byte-keyed cache in front of the string dictionary.
    private var direct: [String: [RouteTarget]] = [:]
    @exclusivity(unchecked) private var directCache: RouteCache
    /// Fanout: every bound queue.
    private var fanout: [RouteTarget] = []

    public struct Binding: Hashable, Sendable {
        public var queue: UInt32
        public var key: String
        public init(queue: UInt32, key: String) {
            self.queue = queue
            self.key = key
        }
    }

    public init(name: String, kind: ExchangeKind, builtIn: Bool = false, durable: Bool = false, cacheCapacity: Int = 256) {
        self.durable = durable
        self.name = name
        self.kind = kind
        self.builtIn = builtIn
        topics = TopicRouter(cacheCapacity: kind == .topic ? cacheCapacity : 1)
        directCache = RouteCache(capacity: kind == .direct ? cacheCapacity : 1)
    }

    /// Binds queue `slot` with `key`; binding the same pair twice is a no-op (as in AMQP).
    /// Throws invalid-pattern for a bad topic-exchange key.
    public func bind(queue slot: UInt32, key: String) throws(WireError) {
        let binding = Binding(queue: slot, key: key)
        guard !bindings.contains(binding) else { return }
        switch kind {
        case .topic:
            try topics.bind(key, .queue(slot))
        case .direct:
            guard key.utf8.count <= WireFormat.maxTopicBytes else {
                throw WireError(.invalidPattern, "a routing key is at most \(WireFormat.maxTopicBytes) bytes")
            }
            direct[key, default: []].append(.queue(slot))
            directCache.invalidate()
        case .fanout:
            if !bindings.contains(where: { $0.queue == slot }) { fanout.append(.queue(slot)) }
        }
        bindings.insert(binding)
    }

    /// Removes one binding; unbinding what is not bound is a no-op (as in AMQP).
    public func unbind(queue slot: UInt32, key: String) {
        guard bindings.remove(Binding(queue: slot, key: key)) != nil else { return }
        switch kind {
        case .topic:
            topics.unbind(key, .queue(slot))
        case .direct:
            direct[key]?.removeAll { $0 == .queue(slot) }
            if direct[key]?.isEmpty == true { direct[key] = nil }
            directCache.invalidate()
        case .fanout:
            if !bindings.contains(where: { $0.queue == slot }) { fanout.removeAll { $0 == .queue(slot) } }
        }
    }

    /// Removes every binding of queue `slot` (the queue is going).
    public func unbindAll(queue slot: UInt32) {
        for b in bindings where b.queue == slot { unbind(queue: slot, key: b.key) }
    }

    public var isUnused: Bool { bindings.isEmpty && topics.subscriptionCount == 0 }

    /// The targets a routing key reaches. Throws invalid-topic for a bad key on a topic exchange.
    @inline(__always)
    public func route(_ key: UnsafeRawBufferPointer) throws(WireError) -> [RouteTarget] {
        switch kind {
        case .fanout:
            return fanout
        case .topic:
            return try topics.route(key)
        case .direct:
            let h = RouteCache.hash(key)
            if let hit = directCache.lookup(key, hash: h) { return hit }
            let targets = direct[String(decoding: key, as: UTF8.self)] ?? []
            directCache.insert(key, hash: h, targets: targets)
            return targets
        }
    }

    /// The default exchange binds every queue by its own name, implicitly.
    func bindImplicitly(queue slot: UInt32, name: String) {
        direct[name] = [.queue(slot)]
        directCache.invalidate()
    }

    func unbindImplicitly(name: String) {
        direct[name] = nil
        directCache.invalidate()
    }
}
