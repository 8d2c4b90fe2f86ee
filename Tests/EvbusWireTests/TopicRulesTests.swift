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

/// The bridge's per-message matcher agrees with the reference on the AMQP table and on every
/// pattern and topic of a small alphabet.
@Suite struct TopicPatternTests {
    @Test func agreesWithTheReferenceOnTheRulesTable() {
        for (pattern, topic, expected) in TopicRulesTests.table {
            #expect(TopicPattern(pattern).matches(topic) == expected, "\(pattern) vs \(topic)")
        }
    }

    @Test func agreesWithTheReferenceOnEveryShortPatternAndTopic() {
        let patternWords = ["a", "b", "ab", "*", "#"], topicWords = ["a", "b", "ab", "ba"]
        func all(_ words: [String], upTo n: Int) -> [String] {
            var out: [[String]] = [[]], level: [[String]] = [[]]
            for _ in 0..<n {
                level = level.flatMap { prefix in words.map { prefix + [$0] } }
                out += level
            }
            return out.dropFirst().map { $0.joined(separator: ".") }
        }
        let topics = all(topicWords, upTo: 4)
        var checked = 0
        for pattern in all(patternWords, upTo: 4) {
            let compiled = TopicPattern(pattern)
            for topic in topics where compiled.matches(topic) != TopicRules.matches(pattern: pattern, topic: topic) {
                Issue.record("\(pattern) vs \(topic): reference says \(TopicRules.matches(pattern: pattern, topic: topic))")
            }
            checked += topics.count
        }
        #expect(checked == 780 * 340)
    }
}
