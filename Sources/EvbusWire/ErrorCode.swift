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
    /// The connecting uid already holds as many connections as its quota allows.
    public static let tooManyConnections = ErrorCode(rawValue: 109)

    public static let invalidTopic = ErrorCode(rawValue: 200)
    public static let invalidPattern = ErrorCode(rawValue: 201)
    public static let unknownSubscription = ErrorCode(rawValue: 202)
    public static let duplicateSubscription = ErrorCode(rawValue: 203)
    public static let tooManySubscriptions = ErrorCode(rawValue: 204)
    public static let unknownExchange = ErrorCode(rawValue: 205)
    public static let unknownQueue = ErrorCode(rawValue: 206)
    public static let queueLocked = ErrorCode(rawValue: 207)
    public static let unknownDeliveryTag = ErrorCode(rawValue: 208)
    public static let preconditionFailed = ErrorCode(rawValue: 209)
    public static let invalidName = ErrorCode(rawValue: 210)
    public static let queueFull = ErrorCode(rawValue: 211)
    public static let unroutable = ErrorCode(rawValue: 212)
    public static let accessRefused = ErrorCode(rawValue: 213)
    public static let unknownConsumer = ErrorCode(rawValue: 214)
    public static let noResponder = ErrorCode(rawValue: 215)
    public static let responderGone = ErrorCode(rawValue: 216)
    public static let invalidRequest = ErrorCode(rawValue: 217)
    /// The broker cannot write its data directory (disk full, I/O error): persistent messages
    /// into durable queues and durable declarations are refused until it can again.
    public static let storageFailed = ErrorCode(rawValue: 218)
    /// The uid's quota (subscriptions, queues, queued bytes) is used up.
    public static let quotaExceeded = ErrorCode(rawValue: 219)

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
        case .tooManyConnections: "too-many-connections"
        case .invalidTopic: "invalid-topic"
        case .invalidPattern: "invalid-pattern"
        case .unknownSubscription: "unknown-subscription"
        case .duplicateSubscription: "duplicate-subscription"
        case .tooManySubscriptions: "too-many-subscriptions"
        case .unknownExchange: "unknown-exchange"
        case .unknownQueue: "unknown-queue"
        case .queueLocked: "queue-locked"
        case .unknownDeliveryTag: "unknown-delivery-tag"
        case .preconditionFailed: "precondition-failed"
        case .invalidName: "invalid-name"
        case .queueFull: "queue-full"
        case .unroutable: "unroutable"
        case .accessRefused: "access-refused"
        case .unknownConsumer: "unknown-consumer"
        case .noResponder: "no-responder"
        case .responderGone: "responder-gone"
        case .invalidRequest: "invalid-request"
        case .storageFailed: "storage-failed"
        case .quotaExceeded: "quota-exceeded"
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
