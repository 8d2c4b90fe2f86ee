public import EvbusWire

/// The broker's subscription table: which (connection, subscription) pairs each topic reaches.
/// Pure: no sockets, no connection objects; the server asks it and does the delivering.
public struct TopicRouter {
    private let trie = TopicTrie()
    private var cache = RouteCache()
    /// Pattern of every live target, to remove a connection's subscriptions when it goes.
    private var patterns: [SubscriptionTarget: String] = [:]

    public init() {}

    public var subscriptionCount: Int { patterns.count }

    /// Registers `target` for `pattern`. Throws invalid-pattern or duplicate-subscription.
    public mutating func subscribe(_ pattern: String, _ target: SubscriptionTarget) throws(WireError) {
        try TopicRules.validatePattern(pattern)
        guard patterns[target] == nil else {
            throw WireError(.duplicateSubscription, "subscription id \(target.subscription) is already in use on this connection")
        }
        patterns[target] = pattern
        trie.insert(pattern, target)
        cache.invalidate()
    }

    /// Removes `target`; throws unknown-subscription if it was not registered.
    public mutating func unsubscribe(_ target: SubscriptionTarget) throws(WireError) {
        guard let pattern = patterns.removeValue(forKey: target) else {
            throw WireError(.unknownSubscription, "no subscription with id \(target.subscription) on this connection")
        }
        trie.remove(pattern, target)
        cache.invalidate()
    }

    /// Removes every subscription of `connection` (it closed).
    public mutating func removeAll(connection: UInt32, subscriptions: some Sequence<UInt32>) {
        for id in subscriptions {
            try? unsubscribe(SubscriptionTarget(connection: connection, subscription: id))
        }
    }

    /// The targets `topic` reaches. Validates the topic on a cache miss (a cached topic was valid),
    /// so the common case is one hash lookup. Throws invalid-topic.
    public mutating func route(_ topic: UnsafeRawBufferPointer) throws(WireError) -> [SubscriptionTarget] {
        let h = RouteCache.hash(topic)
        if let hit = cache.lookup(topic, hash: h) { return hit }
        return try routeSlow(topic, hash: h)
    }

    mutating func routeSlow(_ topic: UnsafeRawBufferPointer, hash h: UInt64) throws(WireError) -> [SubscriptionTarget] {
        try TopicRules.validateTopic(topic)
        let text = String(decoding: topic, as: UTF8.self)
        let targets = trie.match(text[...])
        cache.insert(topic, hash: h, targets: targets)
        return targets
    }

    /// Convenience for tests and cold paths.
    public mutating func route(_ topic: String) throws(WireError) -> [SubscriptionTarget] {
        let bytes = Array(topic.utf8)
        return try bytes.withUnsafeBytes { b in Result { () throws(WireError) in try route(b) } }.get()
    }
}
