/// A subscription pattern made ready, once, for matching many topics given as bytes: what a relay
/// checks per message (the bridge, deciding which of its export patterns a topic belongs to). It
/// allocates nothing per match; `TopicRules.matches(pattern:topic:)` is the reference it is tested
/// against, and the broker routes with its trie instead.
public struct TopicPattern: Sendable, Equatable {
    /// One word of the pattern: a literal (`start..<start+count` of `text`), `*` or `#`.
    private struct Word: Sendable, Equatable {
        enum Kind: UInt8, Sendable { case literal, star, hash }
        var kind: Kind
        var start: Int
        var count: Int
    }

    public let text: String
    private let bytes: [UInt8]
    private let words: [Word]

    /// `pattern` must be valid (`TopicRules.validatePattern`).
    public init(_ pattern: String) {
        text = pattern
        bytes = Array(pattern.utf8)
        var words: [Word] = []
        var start = 0
        for i in 0...bytes.count where i == bytes.count || bytes[i] == TopicRules.separator {
            let count = i - start
            let kind: Word.Kind = count != 1 ? .literal : bytes[start] == TopicRules.star ? .star : bytes[start] == TopicRules.hash ? .hash : .literal
            words.append(Word(kind: kind, start: start, count: count))
            start = i + 1
        }
        self.words = words
    }

    /// Does `topic` (a valid topic, as bytes) match?
    public func matches(_ topic: UnsafeRawBufferPointer) -> Bool {
        bytes.withUnsafeBytes { p in words.withUnsafeBufferPointer { match(0, from: 0, topic, p, $0) } }
    }

    public func matches(_ topic: String) -> Bool {
        var copy = topic
        return copy.withUTF8 { matches(UnsafeRawBufferPointer($0)) }
    }

    /// Words `w...` of the pattern against the topic from byte `at` (past its end: no words left).
    private func match(_ w: Int, from at: Int, _ topic: UnsafeRawBufferPointer, _ text: UnsafeRawBufferPointer, _ words: UnsafeBufferPointer<Word>) -> Bool {
        let noWordsLeft = at > topic.count
        guard w < words.count else { return noWordsLeft }
        let word = words[w]
        if word.kind == .hash {
            // `#` takes no word, or one word and stays.
            if match(w + 1, from: at, topic, text, words) { return true }
            return !noWordsLeft && match(w, from: Self.endOfWord(topic, at) + 1, topic, text, words)
        }
        guard !noWordsLeft else { return false }
        let end = Self.endOfWord(topic, at)
        if word.kind == .literal {
            guard end - at == word.count else { return false }
            for i in 0..<word.count where topic[at + i] != text[word.start + i] { return false }
        }
        return match(w + 1, from: end + 1, topic, text, words)
    }

    /// The index of the `.` after the word starting at `at`, or the topic's length.
    private static func endOfWord(_ topic: UnsafeRawBufferPointer, _ at: Int) -> Int {
        var i = at
        while i < topic.count && topic[i] != TopicRules.separator { i += 1 }
        return i
    }
}
