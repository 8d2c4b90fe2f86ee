public import EvbusWire

/// A topic exchange's table: which subscriptions and queues each topic reaches. The default topic
/// exchange holds both; user topic exchanges hold only queue bindings.
/// Pure: no sockets, no connection objects; the server asks it and does the delivering.
public struct TopicRouter {
    private let trie = TopicTrie()
    private var cache: RouteCache
    /// Queue bindings; one queue may be bound with several patterns (it still gets a message once).
    public private(set) var queueBindingCount = 0

    public init(cacheCapacity: Int = 4096) {
        cache = RouteCache(capacity: cacheCapacity)
    }

    /// Plain subscriptions held (their patterns are kept by their connections, which know which
    /// ids they use: a table of them here cost every idle connection ~40 bytes).
    public private(set) var subscriptionCount = 0

    /// Registers `target` for `pattern`. Throws invalid-pattern. The caller makes sure a target is
    /// subscribed once (a connection's ids are unique).
    public mutating func subscribe(_ pattern: String, _ target: RouteTarget) throws(WireError) {
        try TopicRules.validatePattern(pattern)
        trie.insert(pattern, target)
        subscriptionCount += 1
        cache.invalidate()
    }

    /// Removes `target`, subscribed with `pattern`.
    public mutating func unsubscribe(_ pattern: String, _ target: RouteTarget) {
        if trie.remove(pattern, target) { subscriptionCount -= 1 }
        cache.invalidate()
    }

    /// Binds a queue target with `pattern` (validated). The caller keeps the binding set, so a
    /// (queue, pattern) pair is bound at most once.
    public mutating func bind(_ pattern: String, _ target: RouteTarget) throws(WireError) {
        try TopicRules.validatePattern(pattern)
        trie.insert(pattern, target)
        queueBindingCount += 1
        cache.invalidate()
    }

    public mutating func unbind(_ pattern: String, _ target: RouteTarget) {
        if trie.remove(pattern, target) { queueBindingCount -= 1 }
        cache.invalidate()
    }

    /// Removes every subscription of `connection` (it closed): (id, pattern) pairs.
    public mutating func removeAll(connection: UInt32, subscriptions: some Sequence<(id: UInt32, pattern: String)>) {
        for (id, pattern) in subscriptions {
            unsubscribe(pattern, RouteTarget(connection: connection, subscription: id))
        }
    }

    /// The targets `topic` reaches. Validates the topic on a cache miss (a cached topic was valid),
    /// so the common case is one hash lookup. Throws invalid-topic.
    public mutating func route(_ topic: UnsafeRawBufferPointer) throws(WireError) -> [RouteTarget] {
        let h = RouteCache.hash(topic)
        if let hit = cache.lookup(topic, hash: h) { return hit }
        return try routeSlow(topic, hash: h)
    }

    mutating func routeSlow(_ topic: UnsafeRawBufferPointer, hash h: UInt64) throws(WireError) -> [RouteTarget] {
        try TopicRules.validateTopic(topic)
        let text = String(decoding: topic, as: UTF8.self)
        var targets = trie.match(text[...])
        if queueBindingCount > 0 { targets = Self.unique(targets) }
        cache.insert(topic, hash: h, targets: targets)
        return targets
    }

    /// A queue bound with two matching patterns receives the message once.
    static func unique(_ targets: [RouteTarget]) -> [RouteTarget] {
        var seen = Set<RouteTarget>()
        return targets.filter { !$0.isQueue || seen.insert($0).inserted }
    }

    /// Convenience for tests and cold paths.
    public mutating func route(_ topic: String) throws(WireError) -> [RouteTarget] {
        let bytes = Array(topic.utf8)
        return try bytes.withUnsafeBytes { b in Result { () throws(WireError) in try route(b) } }.get()
    }
}
