import Glibc

/// A delivered message as it lies in the client's read buffer: no copy and no allocation. Valid
/// only during the handler call it is passed to (like evbus's `EventView`); `message()` copies it.
public struct NATSMessageView {
    /// The subscription it was delivered for.
    public let sid: UInt64
    public let subject: UnsafeRawBufferPointer
    public let replyTo: UnsafeRawBufferPointer?
    /// The header block as the server sent it (`NATS/1.0…`, `Name: value` lines, an empty line);
    /// empty for a plain MSG. The parser has checked its shape.
    public let headerBlock: UnsafeRawBufferPointer
    public let payload: UnsafeRawBufferPointer

    /// Calls `body` with each header's name and value, in the order sent (the value without the
    /// spaces after the colon).
    public func forEachHeader(_ body: (_ name: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) -> Void) {
        NATSHeaderBlock.forEachField(headerBlock, body)
    }

    /// The first value of `name`, compared without ASCII case (as NATS servers compare their own).
    public func header(_ name: String) -> UnsafeRawBufferPointer? {
        var found: UnsafeRawBufferPointer?
        var name = name
        name.withUTF8 { wanted in
            forEachHeader { n, v in
                if found == nil, NATSHeaderBlock.equalIgnoringASCIICase(n, UnsafeRawBufferPointer(wanted)) { found = v }
            }
        }
        return found
    }

    /// A copy that outlives the handler.
    public func message() -> NATSMessage {
        NATSMessage(
            subject: String(decoding: subject, as: UTF8.self), sid: sid,
            replyTo: replyTo.map { String(decoding: $0, as: UTF8.self) },
            headers: headerBlock.isEmpty ? nil : NATSHeaderBlock.decode(headerBlock),
            payload: Array(payload))
    }
}

/// The bytes of a header block: `NATS/1.0[ status[ description]]\r\n`, `Name: value\r\n`..., `\r\n`.
enum NATSHeaderBlock {
    private static let version: StaticString = "NATS/1.0"

    /// Calls `body` with each line, without its CRLF (a last line without one included).
    private static func forEachLine(_ b: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) throws(NATSError) -> Void) throws(NATSError) {
        guard let base = b.baseAddress else { return }
        var lineStart = 0, from = 0
        while from < b.count, let lf = memchr(base + from, 10, b.count - from) {
            let i = base.distance(to: UnsafeRawPointer(lf))
            if i > lineStart && b[i - 1] == 13 {
                try body(UnsafeRawBufferPointer(start: base + lineStart, count: i - 1 - lineStart))
                lineStart = i + 1
            }
            from = i + 1
        }
        if lineStart < b.count { try body(UnsafeRawBufferPointer(rebasing: b[lineStart...])) }
    }

    /// Where `byte` first is in `b`.
    private static func index(of byte: UInt8, in b: UnsafeRawBufferPointer) -> Int? {
        guard let base = b.baseAddress, let p = memchr(base, Int32(byte), b.count) else { return nil }
        return base.distance(to: UnsafeRawPointer(p))
    }

    private static func startsWithVersion(_ line: UnsafeRawBufferPointer) -> Bool {
        let v = UnsafeRawBufferPointer(start: version.utf8Start, count: version.utf8CodeUnitCount)
        return line.count >= v.count && line.prefix(v.count).elementsEqual(v)
    }

    /// The parser's check: the version line first, a colon in every other non-empty line.
    static func validate(_ block: UnsafeRawBufferPointer) throws(NATSError) {
        var first = true
        try forEachLine(block) { line throws(NATSError) in
            if first {
                first = false
                guard startsWithVersion(line) else { throw NATSError(.protocolViolation, "headers without NATS/1.0") }
            } else if !line.isEmpty, index(of: 0x3A, in: line) == nil {
                throw NATSError(.protocolViolation, "a header line without ':': \(String(decoding: line, as: UTF8.self))")
            }
        }
        if first { throw NATSError(.protocolViolation, "headers without NATS/1.0") }
    }

    /// Each field of a block `validate` accepted.
    static func forEachField(_ block: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) -> Void) {
        var first = true
        try? forEachLine(block) { line in
            if first { first = false; return }
            guard let colon = index(of: 0x3A, in: line) else { return }
            var valueStart = colon + 1
            while valueStart < line.count && line[valueStart] == 0x20 { valueStart += 1 }
            body(UnsafeRawBufferPointer(rebasing: line[..<colon]), UnsafeRawBufferPointer(rebasing: line[valueStart...]))
        }
    }

    /// The block as `NATSHeaders` (status, description, fields as text).
    static func decode(_ block: UnsafeRawBufferPointer) -> NATSHeaders {
        var headers = NATSHeaders()
        var first = true
        try? forEachLine(block) { line in
            guard first else { return }
            first = false
            let status = line.dropFirst(version.utf8CodeUnitCount).drop { $0 == 0x20 }
            guard !status.isEmpty else { return }
            let code = status.prefix { $0 != 0x20 }
            headers.status = Int(String(decoding: code, as: UTF8.self))
            let description = status.dropFirst(code.count).drop { $0 == 0x20 }
            if !description.isEmpty { headers.statusDescription = String(decoding: description, as: UTF8.self) }
        }
        forEachField(block) { name, value in
            headers.fields.append((String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self)))
        }
        return headers
    }

    static func equalIgnoringASCIICase(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        guard a.count == b.count else { return false }
        for i in 0..<a.count {
            let x = a[i], y = b[i]
            guard x == y || (x | 0x20 == y | 0x20 && (x | 0x20) >= 0x61 && (x | 0x20) <= 0x7A) else { return false }
        }
        return true
    }
}
