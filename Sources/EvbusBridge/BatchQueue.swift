import Synchronization

/// Hands items from one thread to one consuming task in batches: a producer appends under a lock
/// and wakes the consumer only when it is waiting; the consumer takes everything queued at once.
/// (An `AsyncStream` resumes its consumer per element; a bridge importing at full speed would pay
/// a task switch per message.)
final class BatchQueue<Element: Sendable>: Sendable {
    private struct State {
        var items: [Element] = []
        var waiter: CheckedContinuation<[Element], Never>?
        var finished = false
    }

    private let state = Mutex(State())

    func append(_ item: Element) {
        let wake: (CheckedContinuation<[Element], Never>, [Element])? = state.withLock { s in
            guard !s.finished else { return nil }
            guard let waiter = s.waiter else {
                s.items.append(item)
                return nil
            }
            s.waiter = nil
            return (waiter, [item])
        }
        if let (waiter, items) = wake { waiter.resume(returning: items) }
    }

    /// Everything queued, in order, waiting for at least one item; empty once finished.
    func next() async -> [Element] {
        await withCheckedContinuation { c in
            let ready: [Element]? = state.withLock { s in
                if !s.items.isEmpty || s.finished {
                    defer { s.items = [] }
                    return s.items
                }
                s.waiter = c
                return nil
            }
            if let ready { c.resume(returning: ready) }
        }
    }

    /// Wakes the consumer with nothing; later appends are dropped.
    func finish() {
        let waiter = state.withLock { s in
            s.finished = true
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume(returning: [])
    }
}
