/// Optional metadata carried by PUBLISH and DELIVER (AMQP's basic properties). On the wire: one flags
/// byte, then the present fields in bit order (PROTOCOL.md §5.2). The broker copies the block from
/// PUBLISH to every DELIVER unchanged.
public struct MessageProperties: Hashable, Sendable {
    public var contentType: String?
    /// Matches a reply to its request.
    public var correlationID: String?
    /// Where replies should be published.
    public var replyTo: String?
    public var messageID: String?
    /// Milliseconds since the Unix epoch, as the publisher set it.
    public var timestamp: UInt64?
    /// Application headers.
    public var headers: [String: String]
    /// Milliseconds after which a queued message expires (per-message TTL; queues apply the
    /// smaller of this and their own TTL). Subscriptions ignore it.
    public var expiration: UInt32?
    /// Published as persistent (AMQP's delivery mode 2): a durable queue writes it to disk before
    /// confirming it, and it survives a broker restart there (docs/DURABILITY.md). A flag bit with
    /// no field.
    public var persistent: Bool

    public init(
        contentType: String? = nil, correlationID: String? = nil, replyTo: String? = nil, messageID: String? = nil,
        timestamp: UInt64? = nil, headers: [String: String] = [:], expiration: UInt32? = nil, persistent: Bool = false
    ) {
        self.contentType = contentType
        self.correlationID = correlationID
        self.replyTo = replyTo
        self.messageID = messageID
        self.timestamp = timestamp
        self.headers = headers
        self.expiration = expiration
        self.persistent = persistent
    }

    public static let none = MessageProperties()

    public var isEmpty: Bool { self == .none }

    /// Flag bits, in wire order.
    public enum Flag {
        public static let contentType: UInt8 = 0x01
        public static let correlationID: UInt8 = 0x02
        public static let replyTo: UInt8 = 0x04
        public static let messageID: UInt8 = 0x08
        public static let timestamp: UInt8 = 0x10
        public static let headers: UInt8 = 0x20
        public static let expiration: UInt8 = 0x40
        /// Persistent: no field follows. (The last bit: later fields will travel as headers.)
        public static let persistent: UInt8 = 0x80
    }

    /// Whether a raw block (as the broker relays it) marks its message persistent: one load.
    @inlinable
    public static func isPersistent(block: UnsafeRawBufferPointer) -> Bool {
        !block.isEmpty && block[0] & Flag.persistent != 0
    }

    /// Most headers one message may carry.
    public static let maxHeaders = 1024

    /// Why these properties cannot travel whole, or nil when they can: a string longer than a `str`
    /// holds (65,535 bytes) or more than `maxHeaders` headers. `encoded()` would cut such
    /// properties to fit, so a sender refuses them with this reason instead (the Swift library's
    /// publish and request calls throw `invalidArgument` with it).
    public var unsendableReason: String? {
        // One check per field, no array: this runs on every publish that carries properties.
        if let v = contentType, v.utf8.count > Int(UInt16.max) { return Self.tooLong("content type", v) }
        if let v = correlationID, v.utf8.count > Int(UInt16.max) { return Self.tooLong("correlation id", v) }
        if let v = replyTo, v.utf8.count > Int(UInt16.max) { return Self.tooLong("reply-to", v) }
        if let v = messageID, v.utf8.count > Int(UInt16.max) { return Self.tooLong("message id", v) }
        return headers.isEmpty ? nil : Self.unsendableReason(headers: headers)
    }

    /// `unsendableReason` for headers alone (a request's).
    public static func unsendableReason(headers: [String: String]) -> String? {
        guard headers.count <= maxHeaders else { return "\(headers.count) headers; a message carries at most \(maxHeaders)" }
        for (name, value) in headers {
            if name.utf8.count > Int(UInt16.max) { return tooLong("a header name", name) }
            if value.utf8.count > Int(UInt16.max) { return tooLong("header \"\(name)\"", value) }
        }
        return nil
    }

    private static func tooLong(_ field: String, _ value: String) -> String {
        "\(field) is \(value.utf8.count) bytes; a property string is at most 65535"
    }

    /// The encoded block (flags byte included). Properties that `unsendableReason` refuses are cut
    /// to fit (strings between characters, headers to the first `maxHeaders` by name).
    public func encoded() -> [UInt8] {
        var out = BodyBuilder()
        var flags: UInt8 = 0
        if contentType != nil { flags |= Flag.contentType }
        if correlationID != nil { flags |= Flag.correlationID }
        if replyTo != nil { flags |= Flag.replyTo }
        if messageID != nil { flags |= Flag.messageID }
        if timestamp != nil { flags |= Flag.timestamp }
        if !headers.isEmpty { flags |= Flag.headers }
        if expiration != nil { flags |= Flag.expiration }
        if persistent { flags |= Flag.persistent }
        out.bytes.append(flags)
        if let contentType { out.string(contentType) }
        if let correlationID { out.string(correlationID) }
        if let replyTo { out.string(replyTo) }
        if let messageID { out.string(messageID) }
        if let timestamp { out.u64(timestamp) }
        if !headers.isEmpty {
            out.u16(UInt16(min(headers.count, Self.maxHeaders)))
            for key in headers.keys.sorted().prefix(Self.maxHeaders) {
                out.string(key)
                out.string(headers[key]!)
            }
        }
        if let expiration { out.u32(expiration) }
        return out.bytes
    }

    /// Reads a properties block without decoding it, for copying unchanged: the common empty
    /// block (one zero byte) costs one compare; anything else is fully checked by `read`.
    @inlinable
    public static func checkedBlock(_ r: inout ByteReader) throws(WireError) -> UnsafeRawBufferPointer {
        if r.remaining > 0 && r.bytes[r.offset] == 0 { return try r.fixed(1) }
        return try validate(&r)
    }

    /// Checks a block exactly as `read` does — lengths, header count, UTF-8 — without
    /// decoding it (no strings, no dictionary), and returns its raw bytes. The broker checks every
    /// block it relays this way; only the receiver decodes.
    public static func validate(_ r: inout ByteReader) throws(WireError) -> UnsafeRawBufferPointer {
        let start = r.offset
        let flags = try r.u8("property flags")
        if flags != 0 {
            if flags & Flag.contentType != 0 { _ = try r.checkedStringBytes("content type") }
            if flags & Flag.correlationID != 0 { _ = try r.checkedStringBytes("correlation id") }
            if flags & Flag.replyTo != 0 { _ = try r.checkedStringBytes("reply-to") }
            if flags & Flag.messageID != 0 { _ = try r.checkedStringBytes("message id") }
            if flags & Flag.timestamp != 0 { _ = try r.u64("timestamp") }
            if flags & Flag.headers != 0 {
                let count = Int(try r.u16("header count"))
                guard count <= maxHeaders else {
                    throw WireError(.malformedFrame, "\(count) headers; the limit is \(maxHeaders)")
                }
                for _ in 0..<count {
                    _ = try r.checkedStringBytes("header name")
                    _ = try r.checkedStringBytes("header value")
                }
            }
            if flags & Flag.expiration != 0 { _ = try r.u32("expiration") }
        }
        return UnsafeRawBufferPointer(rebasing: r.bytes[start..<r.offset])
    }

    /// The correlation id and reply-to of a checked block, in place (no decoding, no allocation):
    /// they are its second and third fields, after the optional content type.
    public static func routingFields(block: UnsafeRawBufferPointer) -> (correlationID: UnsafeRawBufferPointer?, replyTo: UnsafeRawBufferPointer?) {
        guard block.count > 1 else { return (nil, nil) }
        var r = ByteReader(block)
        guard let flags = try? r.u8("flags") else { return (nil, nil) }
        if flags & Flag.contentType != 0 { _ = try? r.stringBytes("content type") }
        let correlationID = flags & Flag.correlationID != 0 ? try? r.stringBytes("correlation id") : nil
        let replyTo = flags & Flag.replyTo != 0 ? try? r.stringBytes("reply-to") : nil
        return (correlationID, replyTo)
    }

    /// Decodes a block already checked by `read` (a DELIVER's, say); none for a bare flags byte.
    public static func decode(block: UnsafeRawBufferPointer) -> MessageProperties {
        guard block.count > 1 else { return .none }
        var r = ByteReader(block)
        return (try? read(&r).0) ?? .none
    }

    /// Reads a block and returns it with its raw bytes (for copying unchanged). Checks every length,
    /// the header count and that every string is UTF-8: `malformed-frame` otherwise.
    public static func read(_ r: inout ByteReader) throws(WireError) -> (MessageProperties, raw: UnsafeRawBufferPointer) {
        let start = r.offset
        let flags = try r.u8("property flags")
        var p = MessageProperties()
        if flags != 0 {
            p.persistent = flags & Flag.persistent != 0
            if flags & Flag.contentType != 0 { p.contentType = try r.string("content type") }
            if flags & Flag.correlationID != 0 { p.correlationID = try r.string("correlation id") }
            if flags & Flag.replyTo != 0 { p.replyTo = try r.string("reply-to") }
            if flags & Flag.messageID != 0 { p.messageID = try r.string("message id") }
            if flags & Flag.timestamp != 0 { p.timestamp = try r.u64("timestamp") }
            if flags & Flag.headers != 0 {
                let count = Int(try r.u16("header count"))
                guard count <= maxHeaders else {
                    throw WireError(.malformedFrame, "\(count) headers; the limit is \(maxHeaders)")
                }
                for _ in 0..<count {
                    let key = try r.string("header name")
                    p.headers[key] = try r.string("header value")
                }
            }
            if flags & Flag.expiration != 0 { p.expiration = try r.u32("expiration") }
        }
        return (p, UnsafeRawBufferPointer(rebasing: r.bytes[start..<r.offset]))
    }
}
