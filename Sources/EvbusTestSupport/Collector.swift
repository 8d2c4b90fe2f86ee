import Synchronization

/// Values gathered from handlers on other threads, read by the test.
public final class Collector<T: Sendable>: Sendable {
    private let values = Mutex<[T]>([])
    public init() {}
    public func add(_ v: T) { values.withLock { $0.append(v) } }
    public var items: [T] { values.withLock { $0 } }
    public var count: Int { values.withLock { $0.count } }
}
