/// Why an event loop did not take work.
public enum EventLoopError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The loop has stopped: work handed to it is not run.
    case stopped

    public var description: String {
        switch self {
        case .stopped: "the event loop has stopped"
        }
    }
}
