import Synchronization

/// Thread-safe list for observing protocols and handlers from tests.
final class Log<T: Sendable>: Sendable {
    private let items = Mutex<[T]>([])
    func add(_ t: T) { items.withLock { $0.append(t) } }
    var all: [T] { items.withLock { $0 } }
    var count: Int { items.withLock { $0.count } }

    /// Waits (up to 20 s, polling) until `condition` holds for the list; tests then check it.
    func waitUntil(_ condition: ([T]) -> Bool) async {
        for _ in 0..<2000 where !condition(all) {
            try? await Task.sleep(nanoseconds: 10_000_000)
        }
    }
}
