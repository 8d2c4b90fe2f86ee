/// Subscription patterns stored word by word, so matching a topic visits only the branches its words
/// (and `*`/`#`) lead to instead of testing every pattern.
public final class TopicTrie {
    final class Node {
        /// Keyed by `String`, not `Substring`: 16 bytes a key instead of 32, in a table that has
        /// an entry per distinct word (often one per connection: `sensor.<id>.#`). A lookup makes
        /// a `String` of the topic's word, which needs no allocation up to 15 bytes, and runs only
        /// when the route cache misses.
        var children: [String: Node] = [:]
        var star: Node?
        var hash: Node?
        var targets: [RouteTarget] = []

        var isEmpty: Bool { children.isEmpty && star == nil && hash == nil && targets.isEmpty }
    }

    private let root = Node()
    public private(set) var count = 0

    public init() {}

    /// Adds `target` under `pattern` (assumed valid: see `TopicRules.validatePattern`).
    public func insert(_ pattern: String, _ target: RouteTarget) {
        var node = root
        for word in pattern.split(separator: ".", omittingEmptySubsequences: false) {
            switch word {
            case "*":
                if node.star == nil { node.star = Node() }
                node = node.star!
            case "#":
                if node.hash == nil { node.hash = Node() }
                node = node.hash!
            default:
                let key = String(word)
                if let next = node.children[key] {
                    node = next
                } else {
                    let next = Node()
                    node.children[key] = next
                    node = next
                }
            }
        }
        node.targets.append(target)
        count += 1
    }

    /// Removes one `target` registered under `pattern`, pruning branches left empty. Returns false if absent.
    @discardableResult
    public func remove(_ pattern: String, _ target: RouteTarget) -> Bool {
        let words = pattern.split(separator: ".", omittingEmptySubsequences: false)
        var path: [(Node, Substring)] = []
        var node = root
        for word in words {
            let next: Node?
            switch word {
            case "*": next = node.star
            case "#": next = node.hash
            default: next = node.children[String(word)]
            }
            guard let next else { return false }
            path.append((node, word))
            node = next
        }
        guard let index = node.targets.firstIndex(of: target) else { return false }
        node.targets.remove(at: index)
        count -= 1
        // Prune from the leaf up while nodes are empty.
        var child = node
        for (parent, word) in path.reversed() {
            guard child.isEmpty else { break }
            switch word {
            case "*": parent.star = nil
            case "#": parent.hash = nil
            default: parent.children[String(word)] = nil
            }
            child = parent
        }
        return true
    }

    /// Every target whose pattern matches `topic`, each once per matching registration.
    public func match(_ topic: Substring) -> [RouteTarget] {
        let words = topic.split(separator: ".", omittingEmptySubsequences: false)
        var out: [RouteTarget] = []
        var seen = Set<ObjectIdentifier>()
        collect(root, words[...], &out, &seen)
        return out
    }

    /// `seen` guards against reaching one node twice: `#` can match a topic along several paths
    /// (e.g. `#.#` or `a.#.b` against `a.b.b`), and each registration must be counted once.
    private func collect(_ node: Node, _ words: ArraySlice<Substring>, _ out: inout [RouteTarget], _ seen: inout Set<ObjectIdentifier>) {
        if let hash = node.hash {
            // `#` swallows zero words, one word, two, ... up to all of them.
            var rest = words
            while true {
                collect(hash, rest, &out, &seen)
                if rest.isEmpty { break }
                rest = rest.dropFirst()
            }
        }
        guard let word = words.first else {
            if !node.targets.isEmpty && seen.insert(ObjectIdentifier(node)).inserted {
                out.append(contentsOf: node.targets)
            }
            return
        }
        let rest = words.dropFirst()
        if let next = node.children[String(word)] { collect(next, rest, &out, &seen) }
        if let star = node.star { collect(star, rest, &out, &seen) }
    }
}
