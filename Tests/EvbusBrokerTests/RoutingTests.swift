import EvbusBroker
import EvbusWire
import Testing

/// The routing core alone: no sockets.
@Suite struct RoutingTests {
    static let patterns = ["a.b.c", "a.*.c", "a.#", "#", "*", "#.c", "a.#.c", "*.b.*", "x.y", "a.*.#", "#.#", "a.b.#.c"]
    static let topics = ["a", "a.b", "a.b.c", "a.x.c", "a.b.b.c", "x.y", "c", "a.b.c.d", "q.b.r", "x.y.z"]

    @Test func trieAgreesWithTheReferenceMatcherOnEveryPair() throws {
        var router = TopicRouter()
        for (i, p) in Self.patterns.enumerated() {
            try router.subscribe(p, RouteTarget(connection: 0, subscription: UInt32(i)))
        }
        for topic in Self.topics {
            let expected = Set(Self.patterns.indices.filter { TopicRules.matches(pattern: Self.patterns[$0], topic: topic) }.map(UInt32.init))
            let routed = try router.route(topic).map(\.subscription)
            #expect(Set(routed) == expected, "topic \(topic)")
            #expect(routed.count == expected.count, "no duplicates for \(topic)")
        }
    }

    @Test func randomizedPatternsAgreeWithTheReferenceMatcher() throws {
        var rng = SystemRandomNumberGenerator()
        let words = ["a", "b", "c"]
        for _ in 0..<30 {
            var router = TopicRouter()
            var patterns: [String] = []
            for i in 0..<20 {
                let n = Int.random(in: 1...4, using: &rng)
                let p = (0..<n).map { _ in (words + ["*", "#"]).randomElement(using: &rng)! }.joined(separator: ".")
                patterns.append(p)
                try router.subscribe(p, RouteTarget(connection: 1, subscription: UInt32(i)))
            }
            for _ in 0..<20 {
                let n = Int.random(in: 1...5, using: &rng)
                let topic = (0..<n).map { _ in words.randomElement(using: &rng)! }.joined(separator: ".")
                let expected = patterns.indices.filter { TopicRules.matches(pattern: patterns[$0], topic: topic) }.count
                #expect(try router.route(topic).count == expected, "\(topic) vs \(patterns)")
            }
        }
    }

    @Test func everyOverlappingSubscriptionGetsItsOwnCopy() throws {
        var router = TopicRouter()
        let a = RouteTarget(connection: 1, subscription: 1)
        let b = RouteTarget(connection: 1, subscription: 2)
        let c = RouteTarget(connection: 2, subscription: 1)
        try router.subscribe("logs.#", a)
        try router.subscribe("logs.*.error", b)
        try router.subscribe("logs.app.error", c)
        #expect(Set(try router.route("logs.app.error")) == [a, b, c])
        #expect(Set(try router.route("logs.app.info")) == [a])
    }

    @Test func cachedRoutesFollowSubscriptionChanges() throws {
        var router = TopicRouter()
        let t = RouteTarget(connection: 3, subscription: 9)
        #expect(try router.route("a.b").isEmpty)  // cached as "nobody"
        try router.subscribe("a.*", t)
        #expect(try router.route("a.b") == [t])  // cache invalidated by the subscribe
        router.unsubscribe("a.*", t)
        #expect(try router.route("a.b").isEmpty)
        #expect(router.subscriptionCount == 0)
    }

    @Test func refusalsCarryTheirCodes() throws {
        // (Duplicate and unknown subscription ids are the connection's to refuse: BrokerRuleTests
        // and ProtocolRefusalTests check those through the core.)
        var router = TopicRouter()
        #expect(throws: WireError.self) { try router.subscribe("a..b", RouteTarget(connection: 0, subscription: 2)) }
        #expect(throws: WireError.self) { _ = try router.route("a.*") }
        // Unsubscribing what is not there changes nothing.
        router.unsubscribe("a", RouteTarget(connection: 0, subscription: 7))
        #expect(router.subscriptionCount == 0)
    }

    @Test func removingAConnectionRemovesAllItsSubscriptions() throws {
        var router = TopicRouter()
        for i in 0..<5 { try router.subscribe("t.\(i)", RouteTarget(connection: 4, subscription: UInt32(i))) }
        try router.subscribe("t.0", RouteTarget(connection: 5, subscription: 0))
        router.removeAll(connection: 4, subscriptions: (0..<5).map { (id: UInt32($0), pattern: "t.\($0)") })
        #expect(router.subscriptionCount == 1)
        #expect(try router.route("t.0") == [RouteTarget(connection: 5, subscription: 0)])
    }
}
