/// A double-ended queue on one growable array: O(1) append, popFirst and prepend. The stdlib has no
/// deque and the package takes no dependencies, so queues and delivery ledgers use this.
public struct RingBuffer<Element> {
    private var storage: [Element?]
    private var head = 0
    public private(set) var count = 0

    /// `capacity` 0 allocates nothing until the first element (every connection has a ledger; most
    /// never use it).
    public init(capacity: Int = 16) {
        guard capacity > 0 else {
            storage = []
            return
        }
        var c = 1
        while c < capacity { c <<= 1 }
        storage = Array(repeating: nil, count: c)
    }

    public var isEmpty: Bool { count == 0 }

    @inline(__always) private func physical(_ i: Int) -> Int { (head + i) & (storage.count &- 1) }

    public subscript(i: Int) -> Element {
        _read { yield storage[physical(i)]! }
        _modify { yield &storage[physical(i)]! }
    }

    public var first: Element? { count == 0 ? nil : storage[head] }

    public mutating func append(_ e: Element) {
        if count == storage.count { grow() }
        storage[physical(count)] = e
        count += 1
    }

    public mutating func prepend(_ e: Element) {
        if count == storage.count { grow() }
        head = (head &- 1) & (storage.count - 1)
        storage[head] = e
        count += 1
    }

    public mutating func popFirst() -> Element? {
        guard count > 0 else { return nil }
        let e = storage[head].take()
        head = (head + 1) & (storage.count - 1)
        count -= 1
        return e
    }

    /// Drops the first element without returning it (no copy).
    public mutating func removeFirst() {
        storage[head] = nil
        head = (head + 1) & (storage.count - 1)
        count -= 1
    }

    public mutating func removeAll() {
        for i in 0..<count { storage[physical(i)] = nil }
        head = 0
        count = 0
    }

    private mutating func grow() {
        var bigger: [Element?] = Array(repeating: nil, count: max(16, storage.count * 2))
        for i in 0..<count { bigger[i] = storage[physical(i)].take() }
        storage = bigger
        head = 0
    }
}
