/// How evbus topics and NATS subjects correspond (docs/BRIDGE.md): topic `a.b.c` is subject
/// `<prefix>.a.b.c`; in patterns `*` stays `*` and a trailing `#` becomes `>`. A `#` anywhere
/// else has no NATS equivalent and is refused.
public struct TopicMapping: Sendable, Equatable {
    public let prefix: String

    public init(prefix: String) throws(BridgeConfigError) {
        let tokens = prefix.split(separator: ".", omittingEmptySubsequences: false)
        guard !prefix.isEmpty, !tokens.contains(where: { $0.isEmpty || $0 == "*" || $0 == ">" || $0 == "#" || $0.contains(" ") }) else {
            throw BridgeConfigError("prefix", "'\(prefix)' is not a usable subject prefix (dot-separated tokens, no wildcards or spaces)")
        }
        self.prefix = prefix
    }

    /// The NATS subject pattern for an evbus topic pattern.
    public func subjectPattern(_ pattern: String, key: String) throws(BridgeConfigError) -> String {
        let tokens = pattern.split(separator: ".", omittingEmptySubsequences: false)
        guard !pattern.isEmpty, !tokens.contains(where: \.isEmpty) else {
            throw BridgeConfigError(key, "'\(pattern)' is not a topic pattern")
        }
        var out: [String] = []
        for (i, t) in tokens.enumerated() {
            if t == "#" {
                guard i == tokens.count - 1 else {
                    throw BridgeConfigError(key, "'\(pattern)' has '#' before its last word; NATS can only match 'any number of words' at the end ('>')")
                }
                out.append(">")
            } else if t == ">" || t.contains(" ") {
                throw BridgeConfigError(key, "'\(pattern)' has a word NATS cannot carry ('\(t)')")
            } else {
                out.append(String(t))
            }
        }
        return prefix + "." + out.joined(separator: ".")
    }

    /// The NATS subject of a concrete topic.
    public func subject(_ topic: String) -> String { prefix + "." + topic }

    /// The evbus topic of a subject under the prefix, nil for one outside it.
    public func topic(_ subject: String) -> String? {
        guard subject.hasPrefix(prefix + "."), subject.count > prefix.count + 1 else { return nil }
        return String(subject.dropFirst(prefix.count + 1))
    }
}
