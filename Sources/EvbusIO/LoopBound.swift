/// Carries a loop-bound value (one touched only on its event loop's thread) across threads, and
/// traps if it is ever opened anywhere else.
///
/// `@unchecked Sendable` proof: `value` is the only way to reach the wrapped value and it
/// preconditions that the caller is on `loop`'s thread, so the value is never used concurrently.
public struct LoopBound<Value>: @unchecked Sendable {
    public let loop: EventLoop
    private let wrapped: Value

    public init(_ value: Value, loop: EventLoop) {
        self.loop = loop
        self.wrapped = value
    }

    public var value: Value {
        precondition(loop.inEventLoop, "a loop-bound value was used off its event loop thread")
        return wrapped
    }
}
