import Foundation

/// What a NATS server sends (the client protocol, docs.nats.io "Client Protocol"): INFO, MSG,
/// HMSG, PING, PONG, +OK and -ERR, parsed incrementally from a byte stream. Pure: no I/O.

/// A message delivered by the server.
public struct NATSMessage: Sendable, Equatable {
    public var subject: String
    /// The subscription it was delivered for.
    public var sid: UInt64
    public var replyTo: String?
    /// Headers (HMSG), nil for a plain MSG.
    public var headers: NATSHeaders?
    public var payload: [UInt8]

    public init(subject: String, sid: UInt64 = 0, replyTo: String? = nil, headers: NATSHeaders? = nil, payload: [UInt8]) {
        self.subject = subject
        self.sid = sid
        self.replyTo = replyTo
        self.headers = headers
        self.payload = payload
    }
}

/// NATS headers: `NATS/1.0[ <status>[ <description>]]`, then `Name: value` lines. Names keep
/// their case; a name may repeat.
public struct NATSHeaders: Sendable, Equatable {
    /// The status of a server-made message (`503` no responders, `408` timeout...); nil for one
    /// a client sent.
    public var status: Int?
    public var statusDescription: String?
    public var fields: [(name: String, value: String)]

    public init(status: Int? = nil, statusDescription: String? = nil, fields: [(name: String, value: String)] = []) {
        self.status = status
        self.statusDescription = statusDescription
        self.fields = fields
    }

    public static func == (a: NATSHeaders, b: NATSHeaders) -> Bool {
        a.status == b.status && a.statusDescription == b.statusDescription
            && a.fields.map(\.name) == b.fields.map(\.name) && a.fields.map(\.value) == b.fields.map(\.value)
    }

    /// The first value of `name` (compared without case, as NATS servers do for their own).
    public subscript(name: String) -> String? {
        fields.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    /// Parses a header block (`NATS/1.0[ status[ description]]\r\n`, `Name: value\r\n`..., `\r\n`).
    static func parse(_ bytes: UnsafeRawBufferPointer) throws(NATSError) -> NATSHeaders {
        try NATSHeaderBlock.validate(bytes)
        return NATSHeaderBlock.decode(bytes)
    }
}

/// What the server sent.
enum NATSServerOp: Equatable {
    case info([String: String], connectURLs: [String])
    /// A message, where it lies in the parser's buffer (`NATSParser.withView`).
    case msg(NATSMessageLayout)
    case ping, pong, ok
    case err(String)
}

/// Where a message's parts lie in the parser's buffer.
struct NATSMessageLayout: Equatable {
    var sid: UInt64
    var subject: Range<Int>
    var replyTo: Range<Int>?
    var headers: Range<Int>
    var payload: Range<Int>
}

/// Splits a byte stream from a server into operations.
struct NATSParser {
    private var buffer: [UInt8] = []
    private var start = 0
    /// Longer control lines are a broken stream (the server's own limit is 4 KiB by default).
    static let maxControlLine = 64 * 1024

    mutating func append(_ bytes: [UInt8]) {
        if start > 0 && start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        }
        buffer += bytes
    }

    /// Where the CRLF ending the line that starts at `i` is.
    private func lineEnd(from i: Int) -> Int? {
        buffer.withUnsafeBufferPointer { b in
            var j = i + 1
            while j < b.count {
                if b[j] == 10 && b[j - 1] == 13 { return j - 1 }
                j += 1
            }
            return nil
        }
    }

    /// The next whole operation, nil when more bytes are needed.
    mutating func next() throws(NATSError) -> NATSServerOp? {
        compact()  // the operation returned last has been handled
        guard let end = lineEnd(from: start) else {
            if buffer.count - start > Self.maxControlLine { throw NATSError(.protocolViolation, "a control line longer than \(Self.maxControlLine) bytes") }
            return nil
        }
        let first = buffer[start] | 0x20  // ASCII lower case
        if first == UInt8(ascii: "m") || first == UInt8(ascii: "h") { return try message(lineEnd: end) }
        let line = String(decoding: buffer[start..<end], as: UTF8.self)
        let verb = line.prefix { $0 != " " }.uppercased()
        start = end + 2
        switch verb {
        case "PING": return .ping
        case "PONG": return .pong
        case "+OK": return .ok
        case "-ERR": return .err(line.dropFirst(4).trimmingCharacters(in: [" ", "'"]))
        case "INFO": return try Self.info(String(line.dropFirst(4)))
        case "": throw NATSError(.protocolViolation, "an empty control line")
        default: throw NATSError(.protocolViolation, "an unknown operation from the server: \(verb)")
        }
    }

    /// `MSG <subject> <sid> [reply-to] <size>` or `HMSG <subject> <sid> [reply-to] <header size>
    /// <total size>`, then the body and CRLF: read from the bytes (the hot path: no string, no
    /// array; the tokens are counted into a stack allocation).
    private mutating func message(lineEnd end: Int) throws(NATSError) -> NATSServerOp? {
        let lineStart = start
        let parsed = buffer.withUnsafeBytes { b in
            withUnsafeTemporaryAllocation(of: Range<Int>.self, capacity: 7) { tokens in
                Result { () throws(NATSError) in try Self.message(b, start: lineStart, lineEnd: end, tokens: tokens) }
            }
        }
        guard let layout = try parsed.get() else { return nil }
        start = layout.payload.upperBound + 2
        return .msg(layout)
    }

    private static func message(_ b: UnsafeRawBufferPointer, start: Int, lineEnd end: Int, tokens: UnsafeMutableBufferPointer<Range<Int>>) throws(NATSError) -> NATSMessageLayout? {
        var count = 0
        var i = start
        while i < end && count < tokens.count {
            while i < end && b[i] == 0x20 { i += 1 }
            let tokenStart = i
            while i < end && b[i] != 0x20 { i += 1 }
            if i > tokenStart {
                tokens[count] = tokenStart..<i
                count += 1
            }
        }
        let verb = b[tokens[0]]
        let hasHeaders = verb.count == 4 && verb[verb.startIndex] | 0x20 == 0x68  // HMSG; else MSG
        func malformed() -> NATSError {
            NATSError(.protocolViolation, "a malformed \(hasHeaders ? "HMSG" : "MSG") line: \(String(decoding: b[start..<end], as: UTF8.self))")
        }
        guard verb.elementsEqual((hasHeaders ? "HMSG" : "MSG").utf8, by: { $0 & ~0x20 == $1 }) else {
            throw NATSError(.protocolViolation, "an unknown operation from the server: \(String(decoding: verb, as: UTF8.self))")
        }
        let sizes = hasHeaders ? 2 : 1
        guard count == 3 + sizes || count == 4 + sizes,
              let sid = decimal(b, tokens[2]), let total = decimal(b, tokens[count - 1]) else { throw malformed() }
        let headerSize = hasHeaders ? decimal(b, tokens[count - 2]) ?? -1 : 0
        guard headerSize >= 0, headerSize <= total else { throw malformed() }
        let bodyStart = end + 2
        guard b.count >= bodyStart + total + 2 else { return nil }  // the body is not all here yet
        guard b[bodyStart + total] == 13, b[bodyStart + total + 1] == 10 else {
            throw NATSError(.protocolViolation, "\(hasHeaders ? "HMSG" : "MSG") payload not followed by CRLF")
        }
        let headers = bodyStart..<(bodyStart + headerSize)
        if hasHeaders { try NATSHeaderBlock.validate(UnsafeRawBufferPointer(rebasing: b[headers])) }
        return NATSMessageLayout(
            sid: UInt64(sid), subject: tokens[1], replyTo: count == 4 + sizes ? tokens[3] : nil,
            headers: headers, payload: headers.upperBound..<(bodyStart + total))
    }

    /// Calls `body` with the message `next()` returned last: valid until `next()` or `append` is
    /// called again.
    func withView<R>(_ m: NATSMessageLayout, _ body: (NATSMessageView) throws -> R) rethrows -> R {
        let buffer = self.buffer  // a reference: no access to the parser held during `body`
        return try buffer.withUnsafeBytes { b in
            try body(NATSMessageView(
                sid: m.sid, subject: UnsafeRawBufferPointer(rebasing: b[m.subject]),
                replyTo: m.replyTo.map { UnsafeRawBufferPointer(rebasing: b[$0]) },
                headerBlock: UnsafeRawBufferPointer(rebasing: b[m.headers]),
                payload: UnsafeRawBufferPointer(rebasing: b[m.payload])))
        }
    }

    /// A non-negative decimal token (at most 18 digits), nil otherwise.
    private static func decimal(_ b: UnsafeRawBufferPointer, _ r: Range<Int>) -> Int? {
        guard !r.isEmpty, r.count <= 18 else { return nil }
        var v = 0
        for i in r {
            let d = b[i] &- 0x30
            guard d < 10 else { return nil }
            v = v * 10 + Int(d)
        }
        return v
    }

    /// Drops what was handled once it is large; not while a returned message may still be read.
    private mutating func compact() {
        if start > 1 << 16 {
            buffer.removeFirst(start)
            start = 0
        }
    }

    /// INFO's JSON: the flat fields as text, and `connect_urls`.
    static func info(_ json: String) throws(NATSError) -> NATSServerOp {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any] else {
            throw NATSError(.protocolViolation, "INFO is not a JSON object")
        }
        var fields: [String: String] = [:]
        for (key, value) in object {
            switch value {
            case let s as String: fields[key] = s
            case let n as NSNumber: fields[key] = n.stringValue
            default: continue
            }
        }
        return .info(fields, connectURLs: object["connect_urls"] as? [String] ?? [])
    }
}
