/// A connection's subscriptions, id → pattern: a table that holds one without allocating. Most
/// connections subscribe once or not at all, and a one-entry `Dictionary` costs about 100 bytes
/// of heap; idle connections are what this broker has most of. The patterns are kept here, not in
/// the topic router, because only the connection needs them (to unsubscribe and to clean up).
struct Subscriptions: Sequence {
    private enum Storage {
        case none
        case one(UInt32, String)
        case many([UInt32: String])
    }

    private var storage = Storage.none

    var count: Int {
        switch storage {
        case .none: 0
        case .one: 1
        case .many(let table): table.count
        }
    }

    func contains(_ id: UInt32) -> Bool { pattern(of: id) != nil }

    func pattern(of id: UInt32) -> String? {
        switch storage {
        case .none: nil
        case .one(let only, let pattern): only == id ? pattern : nil
        case .many(let table): table[id]
        }
    }

    /// Adds `id` (not already present: the caller checks).
    mutating func insert(_ id: UInt32, pattern: String) {
        switch storage {
        case .none: storage = .one(id, pattern)
        case .one(let only, let onlyPattern): storage = .many([only: onlyPattern, id: pattern])
        case .many(var table):
            storage = .none  // keeps `table` uniquely referenced while it changes
            table[id] = pattern
            storage = .many(table)
        }
    }

    /// Removes `id`; returns its pattern, nil if it was not there.
    mutating func remove(_ id: UInt32) -> String? {
        switch storage {
        case .none: return nil
        case .one(let only, let pattern):
            guard only == id else { return nil }
            storage = .none
            return pattern
        case .many(var table):
            storage = .none
            let pattern = table.removeValue(forKey: id)
            storage = table.isEmpty ? .none : .many(table)
            return pattern
        }
    }

    mutating func removeAll() { storage = .none }

    func makeIterator() -> Array<(id: UInt32, pattern: String)>.Iterator {
        switch storage {
        case .none: [].makeIterator()
        case .one(let only, let pattern): [(only, pattern)].makeIterator()
        case .many(let table): table.map { (id: $0.key, pattern: $0.value) }.makeIterator()
        }
    }
}
