public import EvbusWire

/// Everything the peer library throws: what went wrong (`code`), the broker's wire code when the
/// broker refused something, and a sentence saying why.
public struct EvbusError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Kinds of failure. Opaque so new kinds can be added without breaking callers' switches.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { name }

        /// No broker answered at the socket path.
        public static let cannotConnect = Code(name: "cannot-connect")
        /// The broker refused a request or closed the connection for a protocol error; see `wireCode`.
        public static let refused = Code(name: "refused")
        /// The connection ended (the broker stopped or the socket failed).
        public static let connectionLost = Code(name: "connection-lost")
        /// This peer was closed with `close()`.
        public static let closed = Code(name: "closed")
        /// An argument breaks a protocol rule and was not sent (bad topic, payload over the frame limit).
        public static let invalidArgument = Code(name: "invalid-argument")
        /// No answer came in time.
        public static let timeout = Code(name: "timeout")
        /// The broker cancelled a consumer (its queue was deleted).
        public static let consumerCancelled = Code(name: "consumer-cancelled")
        /// Publisher confirms: the broker refused one or more publishes (a full reject-publish queue,
        /// an unknown exchange, an invalid routing key).
        public static let nacked = Code(name: "nacked")
        /// Request/reply: the broker knew at once that nothing could receive the request.
        public static let noResponder = Code(name: "no-responder")
        /// Request/reply: the responder that accepted the request went away before replying.
        public static let responderGone = Code(name: "responder-gone")
        /// Request/reply: the responder's handler threw; `remoteCode` and `message` say what.
        public static let remote = Code(name: "remote")
        /// The broker answered something this library does not understand.
        public static let protocolViolation = Code(name: "protocol-violation")
    }

    public var code: Code
    /// The broker's error code, for `refused` (and for local checks of the broker's rules).
    public var wireCode: ErrorCode?
    public var message: String
    /// For `remote`: the code the responder gave (`RemoteError.code`), e.g. "invalid-argument".
    public var remoteCode: String?

    public init(_ code: Code, wireCode: ErrorCode? = nil, remoteCode: String? = nil, _ message: String) {
        self.code = code
        self.wireCode = wireCode
        self.remoteCode = remoteCode
        self.message = message
    }

    init(refused error: WireError) {
        self.init(.refused, wireCode: error.code, error.message)
    }

    public var description: String {
        if let wireCode { return "\(code) [\(wireCode)]: \(message)" }
        if let remoteCode { return "\(code) [\(remoteCode)]: \(message)" }
        return "\(code): \(message)"
    }
}
