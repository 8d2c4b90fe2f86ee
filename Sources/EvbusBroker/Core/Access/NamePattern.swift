/// A pattern over dot-separated names, with the topic rules' wildcards (PROTOCOL.md §7): `*` is
/// exactly one word, `#` zero or more. Access rules grant topics, routing keys and exchange and
/// queue names with them.
public struct NamePattern: Sendable, Equatable, CustomStringConvertible {
    public let text: String
    let words: [Substring]

    public init(_ text: String) {
        self.text = text
        words = text.split(separator: ".", omittingEmptySubsequences: false)
    }

    public var description: String { text }

    /// Whether this pattern matches a concrete name (a topic, routing key, exchange or queue name).
    public func matches(_ name: String) -> Bool {
        contains(NamePattern(name), innerIsLiteral: true)
    }

    /// Whether every name `inner` can match is also matched by this pattern: `sensors.#` contains
    /// `sensors.*.temp`; `sensors.*` does not contain `sensors.#`; only `#` contains `#`.
    ///
    /// Decided word by word, and conservatively: a `#` in `inner` is contained only by a `#` of
    /// this pattern at that place (so `*.#` is not taken to contain `#`, although every topic has
    /// a first word). It never says yes wrongly, which is what an access check needs.
    public func contains(_ inner: NamePattern) -> Bool {
        contains(inner, innerIsLiteral: false)
    }

    private func contains(_ inner: NamePattern, innerIsLiteral: Bool) -> Bool {
        let o = words, p = inner.words
        // fits[i][j]: o[i...] contains p[j...]. Filled from the ends, so each cell is O(1).
        var fits = [[Bool]](repeating: [Bool](repeating: false, count: p.count + 1), count: o.count + 1)
        fits[o.count][p.count] = true
        for i in stride(from: o.count - 1, through: 0, by: -1) {
            for j in stride(from: p.count, through: 0, by: -1) {
                let outer = o[i]
                if outer == "#" {
                    // Match nothing more here, or swallow inner's next word (whatever it is).
                    fits[i][j] = fits[i + 1][j] || (j < p.count && fits[i][j + 1])
                    continue
                }
                guard j < p.count else { continue }  // inner ended; a non-# outer word needs one
                let word = p[j]
                let isWildcard = !innerIsLiteral && (word == "#" || word == "*")
                if !innerIsLiteral && word == "#" { continue }  // only an outer # holds an inner #
                if outer == "*" {
                    fits[i][j] = fits[i + 1][j + 1]
                } else if !isWildcard && outer == word {
                    fits[i][j] = fits[i + 1][j + 1]
                }
            }
        }
        return fits[0][0]
    }
}
