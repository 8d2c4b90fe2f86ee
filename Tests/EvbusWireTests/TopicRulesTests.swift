import EvbusWire
import Testing

@Suite struct TopicRulesTests {
    @Test(arguments: ["a", "a.b.c", "sensors.kitchen.temp", "température.cuisine", "x-1.y_2.Z:3", String(repeating: "a", count: 255)])
    func validTopics(_ topic: String) throws {
        try TopicRules.validateTopic(topic)
    }

    @Test(arguments: [
        ("", "empty"), ("a..b", "word 2 is empty"), (".a", "word 1 is empty"), ("a.", "word 2 is empty"),
        ("a.*.b", "wildcard"), ("a.#", "wildcard"), ("a.b*", "wildcard character"), ("a b", "space"),
        ("a\tb", "control"), (String(repeating: "a", count: 256), "256 bytes"),
    ])
    func invalidTopics(_ topic: String, _ reason: String) {
        do {
            try TopicRules.validateTopic(topic)
            Issue.record("accepted invalid topic \(topic)")
        } catch {
            #expect(error.code == .invalidTopic)
            #expect(error.message.contains(reason), "\(error.message)")
        }
    }

    @Test func invalidUTF8TopicIsRefused() {
        let bytes: [UInt8] = [0x61, 0xFF]
        #expect(throws: WireError.self) { try bytes.withUnsafeBytes { try TopicRules.validateTopic($0) } }
    }

    @Test(arguments: ["#", "*", "a.*", "a.#", "#.b", "a.*.c.#", "*.*.*", "a.b"])
    func validPatterns(_ pattern: String) throws {
        try TopicRules.validatePattern(pattern)
    }

    @Test(arguments: ["", "a..b", "a.b*", "a.#b", "**", "a.*#", "a. b"])
    func invalidPatterns(_ pattern: String) {
        do {
            try TopicRules.validatePattern(pattern)
            Issue.record("accepted invalid pattern \(pattern)")
        } catch {
            #expect(error.code == .invalidPattern)
        }
    }

    /// (pattern, topic, matches): the AMQP topic-exchange rules.
    static let table: [(String, String, Bool)] = [
        ("a.b.c", "a.b.c", true), ("a.b.c", "a.b", false), ("a.b", "a.b.c", false),
        ("a.*.c", "a.b.c", true), ("a.*.c", "a.c", false), ("a.*.c", "a.b.b.c", false),
        ("*", "a", true), ("*", "a.b", false),
        ("#", "a", true), ("#", "a.b.c", true),
        ("a.#", "a", true), ("a.#", "a.b", true), ("a.#", "a.b.c", true), ("a.#", "b.a", false),
        ("#.c", "c", true), ("#.c", "a.b.c", true), ("#.c", "a.b.c.d", false),
        ("a.#.c", "a.c", true), ("a.#.c", "a.b.c", true), ("a.#.c", "a.b.d.c", true), ("a.#.c", "a.b.d", false),
        ("*.#", "a", true), ("*.#", "a.b", true), ("#.*", "a", true),
        ("*.*", "a", false), ("#.#", "a.b", true), ("a.#.#.b", "a.b", true), ("a.*.#", "a", false),
    ]

    @Test func referenceMatcherFollowsAMQPRules() {
        for (pattern, topic, expected) in Self.table {
            #expect(TopicRules.matches(pattern: pattern, topic: topic) == expected, "\(pattern) vs \(topic)")
        }
    }
}
