/// A first-in first-out queue of `Work`, kept in fixed-size segments.
///
/// Why not an array: the loop moves each item out of its slot (no copy, so no retain/release pair
/// per field), and a long backlog — a producer faster than the handlers — grows by linking
/// segments instead of reallocating and copying one ever larger buffer (which, past malloc's
/// mmap threshold, page-faults on every growth). Emptied segments are recycled through a
/// `SegmentPool`.
struct WorkFIFO: Sendable {
    private var head: WorkSegment?
    private var tail: WorkSegment?
    private(set) var count = 0

    init() {}

    var isEmpty: Bool { count == 0 }

    mutating func append(_ work: consuming Work, pool: inout SegmentPool) {
        if tail == nil || tail!.isFull {
            let segment = pool.take()
            if let tail { tail.next = segment } else { head = segment }
            tail = segment
        }
        tail!.append(work)
        count += 1
    }

    /// Moves the first item out; its emptied segment goes back to `pool`.
    mutating func popFirst(pool: inout SegmentPool) -> Work? {
        guard let segment = head else { return nil }
        let work = segment.removeFirst()
        count -= 1
        if segment.isDrained {
            head = segment.next
            if head == nil { tail = nil }
            pool.give(segment)
        }
        return work
    }

    /// Moves every item of `other` to the end of this queue (linking, not copying).
    mutating func append(contentsOf other: inout WorkFIFO) {
        guard let otherHead = other.head else { return }
        if let tail { tail.next = otherHead } else { head = otherHead }
        tail = other.tail
        count += other.count
        other = WorkFIFO()
    }
}

/// Emptied segments kept for reuse, up to a limit (a burst's worth stays allocated, not a backlog's).
struct SegmentPool: Sendable {
    private var first: WorkSegment?
    private var kept = 0
    static let limit = 64

    init() {}

    mutating func take() -> WorkSegment {
        guard let segment = first else { return WorkSegment() }
        first = segment.next
        segment.next = nil
        kept -= 1
        return segment
    }

    mutating func give(_ segment: WorkSegment) {
        guard kept < Self.limit else { return }  // dropped: freed
        segment.reset()
        segment.next = first
        first = segment
        kept += 1
    }

    /// Moves every kept segment of `other` into this pool (up to the limit).
    mutating func give(contentsOf other: inout SegmentPool) {
        while let segment = other.first, kept < Self.limit {
            other.first = segment.next
            other.kept -= 1
            segment.next = first
            first = segment
            kept += 1
        }
    }
}

/// One block of `capacity` slots; slots `read..<written` hold live items.
///
/// `@unchecked Sendable` proof: a segment is reachable from exactly one place at a time — the
/// controller's inbox, touched only under its lock, or its engine's queue and pool, touched only on
/// the controller's loop thread — and it moves between the two inside the inbox lock, whose
/// acquire/release orders every access. No two threads ever touch one segment concurrently.
final class WorkSegment: @unchecked Sendable {
    static let capacity = 128
    private let slots = UnsafeMutablePointer<Work>.allocate(capacity: WorkSegment.capacity)
    private var read = 0
    private var written = 0
    var next: WorkSegment?

    var isFull: Bool { written == Self.capacity }
    /// Every item written has been taken.
    var isDrained: Bool { read == written }

    func append(_ work: consuming Work) {
        (slots + written).initialize(to: work)
        written += 1
    }

    func removeFirst() -> Work {
        defer { read += 1 }
        return (slots + read).move()
    }

    func reset() {
        (slots + read).deinitialize(count: written - read)
        read = 0
        written = 0
    }

    deinit {
        (slots + read).deinitialize(count: written - read)
        slots.deallocate()
    }
}
