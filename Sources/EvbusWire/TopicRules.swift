/// The rules for topics and subscription patterns (AMQP topic-exchange syntax).
///
/// A topic is 1–255 bytes of UTF-8: words separated by `.`, every word non-empty, no word containing
/// `*` or `#`, and no ASCII control characters or spaces anywhere. A pattern follows the same rules
/// except that a word may be exactly `*` (matches one word) or exactly `#` (matches zero or more words).
public enum TopicRules {
    public static let separator = UInt8(ascii: ".")
    public static let star = UInt8(ascii: "*")
    public static let hash = UInt8(ascii: "#")

    /// Checks a topic a publisher sent; throws `invalid-topic` saying what is wrong.
    @inlinable
    public static func validateTopic(_ bytes: UnsafeRawBufferPointer) throws(WireError) {
        // Fast path: plain ASCII words with single dots; anything unusual takes the careful path.
        let n = bytes.count
        if n > 0 && n <= WireFormat.maxTopicBytes {
            var previousWasDot = true
            var plain = true
            for b in bytes {
                if b == separator {
                    if previousWasDot { plain = false; break }
                    previousWasDot = true
                } else if b <= 0x20 || b >= 0x7F || b == star || b == hash {
                    plain = false; break
                } else {
                    previousWasDot = false
                }
            }
            if plain && !previousWasDot { return }
        }
        if let problem = problem(in: bytes, allowWildcards: false) {
            throw WireError(.invalidTopic, "invalid topic \(quoted(bytes)): \(problem)")
        }
    }

    /// Checks a subscription pattern; throws `invalid-pattern` saying what is wrong.
    public static func validatePattern(_ bytes: UnsafeRawBufferPointer) throws(WireError) {
        if let problem = problem(in: bytes, allowWildcards: true) {
            throw WireError(.invalidPattern, "invalid pattern \(quoted(bytes)): \(problem)")
        }
    }

    public static func validateTopic(_ topic: String) throws(WireError) {
        var copy = topic
        try copy.withUTF8 { b in Result { () throws(WireError) in try validateTopic(UnsafeRawBufferPointer(b)) } }.get()
    }

    public static func validatePattern(_ pattern: String) throws(WireError) {
        var copy = pattern
        try copy.withUTF8 { b in Result { () throws(WireError) in try validatePattern(UnsafeRawBufferPointer(b)) } }.get()
    }

    /// The first rule `bytes` breaks, or nil.
    @usableFromInline
    static func problem(in bytes: UnsafeRawBufferPointer, allowWildcards: Bool) -> String? {
        if bytes.isEmpty { return "it is empty" }
        if bytes.count > WireFormat.maxTopicBytes {
            return "it is \(bytes.count) bytes; the limit is \(WireFormat.maxTopicBytes)"
        }
        guard let text = String(validating: bytes, as: UTF8.self) else { return "it is not valid UTF-8" }
        for scalar in text.unicodeScalars where scalar.value <= 0x20 || scalar.value == 0x7F {
            return "it contains a space or control character (U+\(String(scalar.value, radix: 16, uppercase: true)))"
        }
        let words = text.split(separator: ".", omittingEmptySubsequences: false)
        for (index, word) in words.enumerated() {
            if word.isEmpty { return "word \(index + 1) is empty (leading, trailing or doubled '.')" }
            let isWildcard = word == "*" || word == "#"
            if isWildcard && !allowWildcards {
                return "'\(word)' is a wildcard; topics you publish must be concrete"
            }
            if !isWildcard && (word.contains("*") || word.contains("#")) {
                return allowWildcards
                    ? "word '\(word)' mixes a wildcard with text; '*' and '#' must be whole words"
                    : "word '\(word)' contains a wildcard character"
            }
        }
        return nil
    }

    @usableFromInline
    static func quoted(_ bytes: UnsafeRawBufferPointer) -> String {
        let shown = String(decoding: bytes.prefix(64), as: UTF8.self)
        return "'\(shown)\(bytes.count > 64 ? "…" : "")'"
    }

    /// Reference matcher: does `topic` match `pattern`? Both are assumed valid. The broker uses a
    /// trie; this direct definition is what the trie is tested against.
    public static func matches(pattern: String, topic: String) -> Bool {
        let p = pattern.split(separator: ".", omittingEmptySubsequences: false)
        let t = topic.split(separator: ".", omittingEmptySubsequences: false)
        return matchWords(p[...], t[...])
    }

    static func matchWords(_ p: ArraySlice<Substring>, _ t: ArraySlice<Substring>) -> Bool {
        guard let first = p.first else { return t.isEmpty }
        if first == "#" {
            // `#` takes zero words, or one word and stays.
            if matchWords(p.dropFirst(), t) { return true }
            return !t.isEmpty && matchWords(p, t.dropFirst())
        }
        guard let word = t.first else { return false }
        return (first == "*" || first == word) && matchWords(p.dropFirst(), t.dropFirst())
    }
}
