/// The one-byte frame type that follows every frame's length.
public enum FrameType: UInt8, Sendable, CaseIterable {
    case hello = 0x01
    case welcome = 0x02
    case ping = 0x03
    case pong = 0x04
    case close = 0x05
    case error = 0x06
    case ok = 0x07
    case publish = 0x10
    case subscribe = 0x11
    case unsubscribe = 0x12
    case deliver = 0x13
    case stats = 0x20
    case statsReply = 0x21

    /// Frames only the broker sends; a client sending one is a protocol violation.
    public var isBrokerOnly: Bool {
        switch self {
        case .welcome, .error, .ok, .deliver, .statsReply: true
        default: false
        }
    }
}
