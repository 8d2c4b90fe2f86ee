import EvbusIO

/// What a handler sees of the event it runs for.
public struct Session: Sendable {
    /// The event name (for `submit`ted work: "submit").
    public let event: String
    /// What was dispatched with the event.
    public let payload: any Sendable
    /// The dispatcher's context values (`dispatch(_:_:context:)`), plus any the controller adds.
    public let context: [String: any Sendable]
    /// When `dispatch` was called and when the controller started running it (monotonic clock).
    public let dispatchedAt: ContinuousClock.Instant
    public let startedAt: ContinuousClock.Instant
    /// The controller running the handler: dispatch follow-up events, submit work, shut it down.
    public var controller: Controller { owner.controller }
    let owner: SessionOwner

    /// The payload as `T`, or nil if it is something else.
    public func payload<T>(as type: T.Type) -> T? { payload as? T }

    /// A context value: the dispatch's, else the controller's (`Controller(context:)`).
    public subscript(key: String) -> (any Sendable)? { context[key] ?? owner.controller.context[key] }

    /// The values given to the controller at construction, the same in every session.
    public var controllerContext: [String: any Sendable] { owner.controller.context }

    /// How long the event waited in the queue before this handler started.
    public var queuedFor: Duration { startedAt - dispatchedAt }
}

/// The outcome of one `dispatch`: every handler's return value, in the order they ran.
public struct DispatchResult: Sendable {
    /// Non-nil return values of the handlers that ran, in order.
    public var results: [any Sendable]
    /// How many handlers ran (matching the event, its match specs, and their remaining counts).
    public var handlersRun: Int
}

/// Holds a controller for its sessions. A session is made for every event on the controller's
/// thread, and retaining the controller itself each time would write its reference count, which
/// shares a cache line with fields every dispatching thread reads: one cross-core miss per event.
/// This box is touched by the controller's thread alone.
final class SessionOwner: Sendable {
    let controller: Controller
    init(_ controller: Controller) { self.controller = controller }
}
