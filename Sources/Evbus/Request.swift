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

/// A request's PUBLISH_TO, encoded straight into the connection's write queue on the loop: the
/// properties block (correlation id, reply-to, any headers) is written in place, not built first.
struct OutgoingRequest: Sendable {
    let flags: UInt8
    let destination: Destination
    /// The call's number; its correlation id on the wire is `r<number>` (`CorrelationNumber`).
    let number: UInt64
    /// The peer's inbox name (shared, not copied per request).
    let replyTo: [UInt8]
    /// The encoded header count and pairs, or empty (the usual case: no headers).
    let headers: [UInt8]
    let payload: [UInt8]
    /// The caller's timeout in milliseconds, sent as the message's expiration: a request still
    /// queued when its caller has given up is dropped by the broker, never run.
    let expirationMillis: UInt32
    /// Bytes of the whole frame.
    let size: Int

    init(
        flags: UInt8, destination: Destination, number: UInt64, replyTo: [UInt8], headers: [String: String], payload: [UInt8],
        timeout: Duration
    ) {
        self.init(
            flags: flags, destination: destination, number: number, replyTo: replyTo,
            encodedHeaders: MessageProperties.encodedHeaders(headers), payload: payload,
            expirationMillis: Self.millis(timeout))
    }

    init(
        flags: UInt8, destination: Destination, number: UInt64, replyTo: [UInt8], encodedHeaders: [UInt8], payload: [UInt8],
        expirationMillis: UInt32
    ) {
        self.expirationMillis = expirationMillis
        self.flags = flags
        self.destination = destination
        self.number = number
        self.replyTo = replyTo
        self.headers = encodedHeaders
        self.payload = payload
        let propertiesCount = RequestPropertiesEncoder.size(
            correlationIDCount: CorrelationNumber.count(number), replyToCount: replyTo.count, headersCount: self.headers.count,
            expires: true)
        size = PublishToEncoder.size(
            exchangeCount: destination.exchange.utf8.count, keyCount: destination.key.utf8.count,
            propertiesCount: propertiesCount, payloadCount: payload.count)
    }

    /// A timeout in whole milliseconds, at least 1 (0 would mean "expire at once").
    static func millis(_ timeout: Duration) -> UInt32 {
        let ms = timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000
        return UInt32(clamping: max(1, ms))
    }

    func write(into base: UnsafeMutableRawPointer) {
        var exchange = destination.exchange
        var key = destination.key
        exchange.withUTF8 { e in
            key.withUTF8 { k in
                var w = ByteWriter(base)
                w.header(.publishTo, bodyCount: size - WireFormat.headerSize)
                w.u8(flags)
                w.string(UnsafeRawBufferPointer(e))
                w.string(UnsafeRawBufferPointer(k))
                replyTo.withUnsafeBytes { replyTo in
                    headers.withUnsafeBytes { headers in
                        RequestPropertiesEncoder.write(
                            into: &w, correlationIDCount: CorrelationNumber.count(number),
                            { CorrelationNumber.write(number, into: &$0) }, replyTo: replyTo, headers: headers,
                            expirationMillis: expirationMillis)
                    }
                }
                payload.withUnsafeBytes { w.bytes($0) }
            }
        }
    }
}

/// A request's correlation id is `r` and its call number in decimal: unique per peer (replies
/// come to its own inbox), parsed back to the number without making a string.
enum CorrelationNumber {
    /// Bytes of `r<number>`.
    static func count(_ number: UInt64) -> Int {
        var digits = 1
        var rest = number / 10
        while rest > 0 {
            digits += 1
            rest /= 10
        }
        return 1 + digits
    }

    static func write(_ number: UInt64, into w: inout ByteWriter) {
        let end = w.offset + count(number)
        w.u8(UInt8(ascii: "r"))
        var rest = number
        var at = end
        repeat {
            at -= 1
            w.base.storeBytes(of: UInt8(ascii: "0") + UInt8(rest % 10), toByteOffset: at, as: UInt8.self)
            rest /= 10
        } while rest > 0
        w.offset = end
    }

    static func text(_ number: UInt64) -> String { "r\(number)" }

    /// The number in `r<number>`, or nil for any other id (not one of this peer's).
    static func parse(_ id: UnsafeRawBufferPointer) -> UInt64? {
        guard id.count >= 2, id.count <= 21, id[0] == UInt8(ascii: "r") else { return nil }
        var number: UInt64 = 0
        for b in id[1...] {
            guard b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9") else { return nil }
            let (times10, o1) = number.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times10.addingReportingOverflow(UInt64(b - UInt8(ascii: "0")))
            guard !o1 && !o2 else { return nil }
            number = sum
        }
        return number
    }

    static func parse(_ id: String) -> UInt64? {
        var id = id
        return id.withUTF8 { parse(UnsafeRawBufferPointer($0)) }
    }
}
