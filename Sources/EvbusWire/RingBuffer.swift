/// A double-ended queue on one growable array: O(1) append, popFirst and prepend. The stdlib has no
/// deque and the package takes no dependencies, so the broker's queues and delivery ledgers and
/// the peer's delivery buffers use this one. It lives here, the module every other depends on,
/// and is inlinable: the broker's per-message paths use it from another module.
@frozen
public struct RingBuffer<Element> {
    @usableFromInline var storage: [Element?]
    @usableFromInline var head = 0
    @usableFromInline var _count = 0
    @inlinable public var count: Int { _count }

    /// `capacity` 0 allocates nothing until the first element (every connection has a ledger; most
    /// never use it).
    @inlinable
    public init(capacity: Int = 16) {
        guard capacity > 0 else {
            storage = []
            return
        }
        var c = 1
        while c < capacity { c <<= 1 }
        storage = Array(repeating: nil, count: c)
    }

    @inlinable
    public var isEmpty: Bool { count == 0 }

    @inlinable @inline(__always)
    func physical(_ i: Int) -> Int { (head + i) & (storage.count &- 1) }

    @inlinable
    public subscript(i: Int) -> Element {
        _read { yield storage[physical(i)]! }
        _modify { yield &storage[physical(i)]! }
    }

    @inlinable
    public var first: Element? { count == 0 ? nil : storage[head] }

    @inlinable
    public var last: Element? { count == 0 ? nil : self[count - 1] }

    @inlinable
    public mutating func append(_ e: Element) {
        if count == storage.count { grow() }
        storage[physical(count)] = e
        _count += 1
    }

    @inlinable
    public mutating func prepend(_ e: Element) {
        if count == storage.count { grow() }
        head = (head &- 1) & (storage.count - 1)
        storage[head] = e
        _count += 1
    }

    @inlinable
    public mutating func popFirst() -> Element? {
        guard count > 0 else { return nil }
        let e = storage[head].take()
        head = (head + 1) & (storage.count - 1)
        _count -= 1
        return e
    }

    /// Drops the first element without returning it (no copy).
    @inlinable
    public mutating func removeFirst() {
        storage[head] = nil
        head = (head + 1) & (storage.count - 1)
        _count -= 1
    }

    @inlinable
    public mutating func removeAll() {
        for i in 0..<count { storage[physical(i)] = nil }
        head = 0
        _count = 0
    }

    @usableFromInline
    mutating func grow() {
        var bigger: [Element?] = Array(repeating: nil, count: max(16, storage.count * 2))
        for i in 0..<count { bigger[i] = storage[physical(i)].take() }
        storage = bigger
        head = 0
    }
}

extension RingBuffer: Sendable where Element: Sendable {}
