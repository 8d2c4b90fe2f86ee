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
    static func parse(_ bytes: ArraySlice<UInt8>) throws(NATSError) -> NATSHeaders {
        var lines: [ArraySlice<UInt8>] = []
        var i = bytes.startIndex, lineStart = i
        while i + 1 < bytes.endIndex {
            if bytes[i] == 13 && bytes[i + 1] == 10 {
                lines.append(bytes[lineStart..<i])
                i += 2
                lineStart = i
            } else {
                i += 1
            }
        }
        if lineStart < bytes.endIndex { lines.append(bytes[lineStart..<bytes.endIndex]) }
        let version = Array("NATS/1.0".utf8)
        guard let first = lines.first, first.starts(with: version) else { throw NATSError(.protocolViolation, "headers without NATS/1.0") }
        var headers = NATSHeaders()
        let status = first.dropFirst(version.count).drop { $0 == 0x20 }
        if !status.isEmpty {
            let code = status.prefix { $0 != 0x20 }
            headers.status = Int(String(decoding: code, as: UTF8.self))
            let description = status.dropFirst(code.count).drop { $0 == 0x20 }
            if !description.isEmpty { headers.statusDescription = String(decoding: description, as: UTF8.self) }
        }
        for line in lines.dropFirst() where !line.isEmpty {
            guard let colon = line.firstIndex(of: 0x3A) else {
                throw NATSError(.protocolViolation, "a header line without ':': \(String(decoding: line, as: UTF8.self))")
            }
            let value = line[(colon + 1)...].drop { $0 == 0x20 }
            headers.fields.append((String(decoding: line[..<colon], as: UTF8.self), String(decoding: value, as: UTF8.self)))
        }
        return headers
    }
}

/// What the server sent.
enum NATSServerOp: Equatable {
    case info([String: String], connectURLs: [String])
    case msg(NATSMessage)
    case ping, pong, ok
    case err(String)
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
        guard let end = lineEnd(from: start) else {
            if buffer.count - start > Self.maxControlLine { throw NATSError(.protocolViolation, "a control line longer than \(Self.maxControlLine) bytes") }
            return nil
        }
        let first = buffer[start] | 0x20  // ASCII lower case
        if first == UInt8(ascii: "m") || first == UInt8(ascii: "h") { return try message(lineEnd: end) }
        let line = String(decoding: buffer[start..<end], as: UTF8.self)
        let verb = line.prefix { $0 != " " }.uppercased()
        start = end + 2
        compact()
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
    /// <total size>`, then the body and CRLF: read from the bytes (the hot path: no line string).
    private mutating func message(lineEnd end: Int) throws(NATSError) -> NATSServerOp? {
        var tokens: [Range<Int>] = []
        tokens.reserveCapacity(6)
        var i = start
        while i < end && tokens.count <= 6 {
            while i < end && buffer[i] == 0x20 { i += 1 }
            let tokenStart = i
            while i < end && buffer[i] != 0x20 { i += 1 }
            if i > tokenStart { tokens.append(tokenStart..<i) }
        }
        let verb = tokens.first.map { buffer[$0].map { $0 & ~0x20 } } ?? []
        let hasHeaders = verb == Array("HMSG".utf8)
        let malformed = NATSError(.protocolViolation, "a malformed \(hasHeaders ? "HMSG" : "MSG") line: \(String(decoding: buffer[start..<end], as: UTF8.self))")
        guard hasHeaders || verb == Array("MSG".utf8) else {
            throw NATSError(.protocolViolation, "an unknown operation from the server: \(String(decoding: verb, as: UTF8.self))")
        }
        let sizes = hasHeaders ? 2 : 1
        guard tokens.count == 3 + sizes || tokens.count == 4 + sizes,
              let sid = decimal(tokens[2]), let total = decimal(tokens[tokens.count - 1]) else { throw malformed }
        let headerSize = hasHeaders ? decimal(tokens[tokens.count - 2]) ?? -1 : 0
        guard headerSize >= 0, headerSize <= total else { throw malformed }
        let bodyStart = end + 2
        guard buffer.count >= bodyStart + total + 2 else { return nil }  // the body is not all here yet
        guard buffer[bodyStart + total] == 13, buffer[bodyStart + total + 1] == 10 else {
            throw NATSError(.protocolViolation, "\(hasHeaders ? "HMSG" : "MSG") payload not followed by CRLF")
        }
        let headers = hasHeaders ? try NATSHeaders.parse(buffer[bodyStart..<(bodyStart + headerSize)]) : nil
        let message = NATSMessage(
            subject: String(decoding: buffer[tokens[1]], as: UTF8.self), sid: UInt64(sid),
            replyTo: tokens.count == 4 + sizes ? String(decoding: buffer[tokens[3]], as: UTF8.self) : nil,
            headers: headers, payload: Array(buffer[(bodyStart + headerSize)..<(bodyStart + total)]))
        start = bodyStart + total + 2
        compact()
        return .msg(message)
    }

    /// A non-negative decimal token (at most 18 digits), nil otherwise.
    private func decimal(_ r: Range<Int>) -> Int? {
        guard !r.isEmpty, r.count <= 18 else { return nil }
        var v = 0
        for i in r {
            let d = buffer[i] &- 0x30
            guard d < 10 else { return nil }
            v = v * 10 + Int(d)
        }
        return v
    }

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
