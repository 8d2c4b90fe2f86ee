public import EvbusWire

/// Where a request goes: a queue (through the default exchange) or an exchange with a routing key.
public enum Destination: Sendable, Hashable {
    case queue(String)
    case exchange(String, key: String)

    var exchange: String {
        switch self {
        case .queue: ""
        case .exchange(let e, _): e
        }
    }

    var key: String {
        switch self {
        case .queue(let q): q
        case .exchange(_, let k): k
        }
    }
}

/// A request as a responder's handler sees it.
public struct Request: Sendable {
    public var payload: [UInt8]
    public var properties: MessageProperties
    public var routingKey: String
    /// The connection that sent it.
    public var publisher: UInt64
    /// It was delivered before to a responder that went away without accepting it.
    public var redelivered: Bool

    public var text: String { String(decoding: payload, as: UTF8.self) }
    public var headers: [String: String] { properties.headers }
    public var correlationID: String? { properties.correlationID }
    public var replyTo: String? { properties.replyTo }
}

/// A successful reply.
public struct Reply: Sendable, Hashable {
    public var payload: [UInt8]
    public var properties: MessageProperties
    /// The responder's connection.
    public var publisher: UInt64

    public var text: String { String(decoding: payload, as: UTF8.self) }
    public var headers: [String: String] { properties.headers }
}

/// Throw this from a responder's handler to send the caller a specific error code and message
/// (any other error travels as code "error" with its description).
public struct RemoteError: Error, Sendable, Hashable, CustomStringConvertible {
    public var code: String
    public var message: String

    public init(_ code: String, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}

/// The reply headers that carry a responder's outcome.
enum ReplyHeader {
    static let status = "evbus-status"
    static let errorCode = "evbus-error-code"
    static let ok = "ok"
    static let error = "error"
}

/// A request's PUBLISH_TO, encoded straight into the connection's write queue on the loop.
struct OutgoingRequest: Sendable {
    var flags: UInt8
    var exchange: [UInt8]
    var key: [UInt8]
    var properties: [UInt8]
    var payload: [UInt8]

    var size: Int {
        PublishToEncoder.size(
            exchangeCount: exchange.count, keyCount: key.count, propertiesCount: properties.count, payloadCount: payload.count)
    }

    func write(into base: UnsafeMutableRawPointer) {
        exchange.withUnsafeBytes { e in
            key.withUnsafeBytes { k in
                properties.withUnsafeBytes { p in
                    payload.withUnsafeBytes { b in
                        PublishToEncoder.write(into: base, flags: flags, exchange: e, routingKey: k, properties: p, payload: b)
                    }
                }
            }
        }
    }
}
