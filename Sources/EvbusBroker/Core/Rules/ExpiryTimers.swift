/// When queue heads expire: one min-heap of deadlines for every queue, so the core asks its
/// output for one wake-up at a time (the earliest). An entry whose queue was deleted, or whose
/// deadline was replaced by an earlier one, is skipped when it comes due.
struct ExpiryTimers {
    struct Entry {
        var deadline: UInt64
        var queueSlot: UInt32
        var queue: ObjectIdentifier
    }

    private var heap: [Entry] = []

    var earliest: UInt64? { heap.first?.deadline }

    mutating func push(_ e: Entry) {
        heap.append(e)
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if heap[parent].deadline <= heap[i].deadline { break }
            heap.swapAt(parent, i)
            i = parent
        }
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    mutating func popDue(_ now: UInt64) -> Entry? {
        guard let top = heap.first, top.deadline <= now else { return nil }
        heap.swapAt(0, heap.count - 1)
        heap.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < heap.count && heap[l].deadline < heap[m].deadline { m = l }
            if r < heap.count && heap[r].deadline < heap[m].deadline { m = r }
            if m == i { break }
            heap.swapAt(i, m)
            i = m
        }
        return top
    }
}
