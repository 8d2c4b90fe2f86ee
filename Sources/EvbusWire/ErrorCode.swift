/// A stable numeric reason carried by ERROR frames (and by `EvbusError` in the library).
///
/// Codes 100–199 are connection errors: the broker sends the ERROR frame, flushes, and closes the
/// connection. Codes 200–299 refuse one request: the connection stays open and nothing else changes.
/// New codes may be added in later versions; treat an unknown 1xx as fatal and an unknown 2xx as not.
public struct ErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let badMagic = ErrorCode(rawValue: 100)
    public static let unsupportedVersion = ErrorCode(rawValue: 101)
    public static let frameTooLarge = ErrorCode(rawValue: 102)
    public static let unknownFrameType = ErrorCode(rawValue: 103)
    public static let malformedFrame = ErrorCode(rawValue: 104)
    public static let unexpectedFrame = ErrorCode(rawValue: 105)
    public static let slowConsumer = ErrorCode(rawValue: 106)
    public static let shuttingDown = ErrorCode(rawValue: 107)
    public static let handshakeTimeout = ErrorCode(rawValue: 108)

    public static let invalidTopic = ErrorCode(rawValue: 200)
    public static let invalidPattern = ErrorCode(rawValue: 201)
    public static let unknownSubscription = ErrorCode(rawValue: 202)
    public static let duplicateSubscription = ErrorCode(rawValue: 203)
    public static let tooManySubscriptions = ErrorCode(rawValue: 204)

    /// True when the broker closes the connection after sending this code.
    public var closesConnection: Bool { rawValue < 200 }

    public var name: String {
        switch self {
        case .badMagic: "bad-magic"
        case .unsupportedVersion: "unsupported-version"
        case .frameTooLarge: "frame-too-large"
        case .unknownFrameType: "unknown-frame-type"
        case .malformedFrame: "malformed-frame"
        case .unexpectedFrame: "unexpected-frame"
        case .slowConsumer: "slow-consumer"
        case .shuttingDown: "shutting-down"
        case .handshakeTimeout: "handshake-timeout"
        case .invalidTopic: "invalid-topic"
        case .invalidPattern: "invalid-pattern"
        case .unknownSubscription: "unknown-subscription"
        case .duplicateSubscription: "duplicate-subscription"
        case .tooManySubscriptions: "too-many-subscriptions"
        default: "error-\(rawValue)"
        }
    }

    public var description: String { "\(name) (\(rawValue))" }
}

/// A refusal: what was refused (the code) and why, in words a person can act on.
public struct WireError: Error, Hashable, Sendable, CustomStringConvertible {
    public var code: ErrorCode
    public var message: String

    public init(_ code: ErrorCode, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.name): \(message)" }
}
