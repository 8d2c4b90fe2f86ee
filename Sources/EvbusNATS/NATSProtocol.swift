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

    /// The header block as HPUB carries it; names and values with CR or LF are refused.
    public func encoded() throws(NATSError) -> [UInt8] {
        var text = "NATS/1.0\r\n"
        for (name, value) in fields {
            guard !name.isEmpty, !name.contains(where: { $0 == ":" || $0.isNewline || $0 == " " }), !value.contains(where: \.isNewline) else {
                throw NATSError(.invalidArgument, "the header \(name) cannot be sent: names have no ':', spaces or line breaks, values no line breaks")
            }
            text += "\(name): \(value)\r\n"
        }
        return Array((text + "\r\n").utf8)
    }

    static func parse(_ bytes: ArraySlice<UInt8>) throws(NATSError) -> NATSHeaders {
        let text = String(decoding: bytes, as: UTF8.self)
        var lines = text.components(separatedBy: "\r\n")
        guard let first = lines.first, first.hasPrefix("NATS/1.0") else { throw NATSError(.protocolViolation, "headers without NATS/1.0") }
        lines.removeFirst()
        var headers = NATSHeaders()
        let status = first.dropFirst("NATS/1.0".count).split(separator: " ", maxSplits: 1)
        if let code = status.first { headers.status = Int(code) }
        if status.count > 1 { headers.statusDescription = String(status[1]) }
        for line in lines where !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else { throw NATSError(.protocolViolation, "a header line without ':': \(line)") }
            let value = line[line.index(after: colon)...].drop { $0 == " " }
            headers.fields.append((String(line[..<colon]), String(value)))
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

    private func lineEnd(from i: Int) -> Int? {
        var j = i
        while j + 1 < buffer.count {
            if buffer[j] == 13 && buffer[j + 1] == 10 { return j }
            j += 1
        }
        return nil
    }

    /// The next whole operation, nil when more bytes are needed.
    mutating func next() throws(NATSError) -> NATSServerOp? {
        guard let end = lineEnd(from: start) else {
            if buffer.count - start > Self.maxControlLine { throw NATSError(.protocolViolation, "a control line longer than \(Self.maxControlLine) bytes") }
            return nil
        }
        let line = String(decoding: buffer[start..<end], as: UTF8.self)
        let words = line.split(separator: " ", omittingEmptySubsequences: true)
        guard let verb = words.first?.uppercased() else { throw NATSError(.protocolViolation, "an empty control line") }
        let afterLine = end + 2
        switch verb {
        case "PING": start = afterLine; compact(); return .ping
        case "PONG": start = afterLine; compact(); return .pong
        case "+OK": start = afterLine; compact(); return .ok
        case "-ERR":
            start = afterLine
            compact()
            return .err(line.dropFirst(4).trimmingCharacters(in: [" ", "'"]))
        case "INFO":
            start = afterLine
            compact()
            return try Self.info(String(line.dropFirst(4)))
        case "MSG", "HMSG":
            let hasHeaders = verb == "HMSG"
            let args = words.dropFirst().map(String.init)
            let sizes = hasHeaders ? 2 : 1
            guard args.count == 2 + sizes || args.count == 3 + sizes,
                  let total = Int(args.last!), total >= 0,
                  let sid = UInt64(args[1]) else { throw NATSError(.protocolViolation, "a malformed \(verb) line: \(line)") }
            let headerSize = hasHeaders ? Int(args[args.count - 2]) ?? -1 : 0
            guard headerSize >= 0, headerSize <= total else { throw NATSError(.protocolViolation, "a malformed \(verb) line: \(line)") }
            guard buffer.count >= afterLine + total + 2 else { return nil }  // the payload is not all here yet
            let body = buffer[afterLine..<(afterLine + total)]
            guard buffer[afterLine + total] == 13, buffer[afterLine + total + 1] == 10 else {
                throw NATSError(.protocolViolation, "\(verb) payload not followed by CRLF")
            }
            let headers = hasHeaders ? try NATSHeaders.parse(body.prefix(headerSize)) : nil
            let message = NATSMessage(
                subject: args[0], sid: sid, replyTo: args.count == 3 + sizes ? args[2] : nil, headers: headers,
                payload: Array(body.dropFirst(headerSize)))
            start = afterLine + total + 2
            compact()
            return .msg(message)
        default:
            throw NATSError(.protocolViolation, "an unknown operation from the server: \(verb)")
        }
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
