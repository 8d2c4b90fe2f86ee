/// A connection's subscription ids: a set that holds one id without allocating. Most connections
/// subscribe once or not at all, and a `Set` with one element costs 80 bytes of heap; idle
/// connections are what this broker has most of.
struct SubscriptionIDs: Sequence {
    private enum Storage {
        case none
        case one(UInt32)
        case many(Set<UInt32>)
    }

    private var storage = Storage.none

    var count: Int {
        switch storage {
        case .none: 0
        case .one: 1
        case .many(let set): set.count
        }
    }

    func contains(_ id: UInt32) -> Bool {
        switch storage {
        case .none: false
        case .one(let only): only == id
        case .many(let set): set.contains(id)
        }
    }

    mutating func insert(_ id: UInt32) {
        switch storage {
        case .none: storage = .one(id)
        case .one(let only): if only != id { storage = .many([only, id]) }
        case .many(var set):
            storage = .none  // keeps `set` uniquely referenced while it changes
            set.insert(id)
            storage = .many(set)
        }
    }

    mutating func remove(_ id: UInt32) {
        switch storage {
        case .none: break
        case .one(let only): if only == id { storage = .none }
        case .many(var set):
            storage = .none
            set.remove(id)
            storage = set.isEmpty ? .none : .many(set)
        }
    }

    mutating func removeAll() { storage = .none }

    func makeIterator() -> Array<UInt32>.Iterator {
        switch storage {
        case .none: [].makeIterator()
        case .one(let only): [only].makeIterator()
        case .many(let set): Array(set).makeIterator()
        }
    }
}
