import Glibc

/// Remembers which targets each recently published topic reaches, keyed by the topic's raw bytes, so a
/// publish to a known topic costs one hash and one compare instead of a trie walk.
///
/// Any subscription change bumps `generation`, which invalidates every entry at once in O(1).
struct RouteCache {
    struct Entry {
        var hash: UInt64
        var generation: UInt64
        var key: [UInt8]
        var targets: [RouteTarget]
    }

    private var entries: [Entry?]
    private let mask: Int
    private(set) var generation: UInt64 = 1
    private static let probes = 4

    init(capacity: Int = 4096) {
        precondition(capacity > 0 && capacity & (capacity - 1) == 0, "capacity must be a power of two")
        entries = Array(repeating: nil, count: capacity)
        mask = capacity - 1
    }

    mutating func invalidate() { generation &+= 1 }

    @inline(__always)
    static func hash(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        // FNV-1a: topics are short; this is cheap and spreads well enough for a probe table.
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes {
            h = (h ^ UInt64(b)) &* 0x100_0000_01b3
        }
        return h
    }

    func lookup(_ topic: UnsafeRawBufferPointer, hash h: UInt64) -> [RouteTarget]? {
        var i = Int(truncatingIfNeeded: h) & mask
        for _ in 0..<Self.probes {
            guard let e = entries[i] else { return nil }
            if e.hash == h && e.generation == generation && e.key.count == topic.count
                && e.key.withUnsafeBytes({ topic.isEmpty || memcmp($0.baseAddress!, topic.baseAddress!, topic.count) == 0 })
            {
                return e.targets
            }
            i = (i + 1) & mask
        }
        return nil
    }

    mutating func insert(_ topic: UnsafeRawBufferPointer, hash h: UInt64, targets: [RouteTarget]) {
        let home = Int(truncatingIfNeeded: h) & mask
        var slot = home
        for step in 0..<Self.probes {
            let i = (home + step) & mask
            if let e = entries[i], e.generation == generation { continue }
            slot = i
            break
        }
        // All probes live: overwrite the home slot (the cache is a hint, never the source of truth).
        entries[slot] = Entry(hash: h, generation: generation, key: Array(topic), targets: targets)
    }
}
