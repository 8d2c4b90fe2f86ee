/// Why a NATS operation failed.
public struct NATSError: Error, Equatable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { name }
        /// No server of the list could be reached (yet).
        public static let notConnected = Code(name: "not-connected")
        /// The server broke the protocol, or sent -ERR.
        public static let protocolViolation = Code(name: "protocol-violation")
        /// A subject, header or payload that cannot be sent.
        public static let invalidArgument = Code(name: "invalid-argument")
        /// A message larger than the connected server's `max_payload` (its INFO says; 1 MiB by
        /// default): not sent. Sent, the server would close the connection.
        public static let payloadTooLarge = Code(name: "payload-too-large")
        /// A request nobody subscribes to (the server's 503 status).
        public static let noResponders = Code(name: "no-responders")
        /// No reply within the timeout.
        public static let timeout = Code(name: "timeout")
        /// The client was closed.
        public static let closed = Code(name: "closed")
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}
