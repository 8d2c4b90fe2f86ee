import Synchronization

/// An event an object declares it emits (MrEventLoop's `@emits`, Swift-native):
///
/// ```swift
/// final class Camera: Sendable { let frameReady = Signal<Int>() }
/// let link = connect(camera.frameReady, to: controller, as: "frame")   // runs on the controller
/// let log = connect(camera.frameReady) { n in print(n) }                // runs on the emitter's thread
/// camera.frameReady.emit(42)
/// disconnect(link)
/// ```
public final class Signal<Value: Sendable>: Sendable {
    enum Target: Sendable {
        case controller(Controller, event: String)
        case handler(@Sendable (Value) -> Void)
    }

    private let targets = Mutex<[(id: UInt64, target: Target)]>([])
    private let nextID = Atomic<UInt64>(1)

    public init() {}

    /// Sends `value` to every connection: dispatched to connected controllers (queued, in order),
    /// called directly for connected handlers.
    public func emit(_ value: Value) {
        for (_, target) in targets.withLock({ $0 }) {
            switch target {
            case .controller(let c, let event): c.dispatch(event, value)
            case .handler(let h): h(value)
            }
        }
    }

    func add(_ target: Target) -> SignalConnection {
        let id = nextID.add(1, ordering: .relaxed).oldValue
        targets.withLock { $0.append((id, target)) }
        return SignalConnection { [weak self] in self?.targets.withLock { $0.removeAll { $0.id == id } } }
    }

    /// Removes every connection (MrEventLoop's `disconnect(producer, 'produced')`).
    public func disconnectAll() { targets.withLock { $0.removeAll() } }

    /// How many connections there are.
    public var connectionCount: Int { targets.withLock { $0.count } }
}

/// One connection made by `connect`; pass it to `disconnect`.
public struct SignalConnection: Sendable {
    let remove: @Sendable () -> Void
}

/// Connects a signal to a controller: each emitted value is dispatched to it as `event` (the
/// value is the session's payload), so slots run strictly one at a time, in FIFO order.
@discardableResult
public func connect<Value>(_ signal: Signal<Value>, to controller: Controller, as event: String) -> SignalConnection {
    signal.add(.controller(controller, event: event))
}

/// Connects a signal to a plain handler, called on the emitting thread.
@discardableResult
public func connect<Value>(_ signal: Signal<Value>, _ handler: @escaping @Sendable (Value) -> Void) -> SignalConnection {
    signal.add(.handler(handler))
}

/// Undoes one `connect`.
public func disconnect(_ connection: SignalConnection) { connection.remove() }
