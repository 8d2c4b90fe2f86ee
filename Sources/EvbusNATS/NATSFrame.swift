import Glibc

/// What a client sends that carries a message: PUB and HPUB frames, written byte by byte into a
/// caller's buffer (no string building per message: publishing is the client's hot path).
enum NATSFrame {
    private static let space: UInt8 = 0x20, cr: UInt8 = 13, lf: UInt8 = 10, dot: UInt8 = 0x2E

    /// Refuses what a publish cannot carry; returns the size of the header block (0 for none).
    static func checkPublish(subject: String, replyTo: String?, headers: NATSHeaders?) throws(NATSError) -> Int {
        try checkSubject(subject, wildcards: false)
        if let replyTo { try checkSubject(replyTo, wildcards: false) }
        guard let headers else { return 0 }
        return try headers.encodedCount()
    }

    /// Appends `PUB <subject> [reply] <n>\r\n<payload>\r\n`, or HPUB with the header block of
    /// `headerBytes` bytes, as `checkPublish` passed and measured them.
    static func appendPublish(
        _ out: inout [UInt8], subject: String, payload: UnsafeRawBufferPointer, replyTo: String?, headers: NATSHeaders?, headerBytes: Int
    ) {
        out.append(contentsOf: headers == nil ? "PUB ".utf8 : "HPUB ".utf8)
        out.append(contentsOf: subject.utf8)
        if let replyTo {
            out.append(space)
            out.append(contentsOf: replyTo.utf8)
        }
        if let headers {
            out.append(space)
            appendDecimal(&out, headerBytes)
            out.append(space)
            appendDecimal(&out, headerBytes + payload.count)
            out.append(cr)
            out.append(lf)
            headers.append(to: &out)
        } else {
            out.append(space)
            appendDecimal(&out, payload.count)
            out.append(cr)
            out.append(lf)
        }
        out.append(contentsOf: payload)
        out.append(cr)
        out.append(lf)
    }

    /// Appends `HPUB <subject> <h> <h+n>\r\n<header block><payload>\r\n` from bytes `checkSubject`
    /// and `checkHeaderBlock` passed.
    static func appendPublish(_ out: inout [UInt8], subject: UnsafeRawBufferPointer, headerBlock: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer) {
        out.append(contentsOf: "HPUB ".utf8)
        out.append(contentsOf: subject)
        out.append(space)
        appendDecimal(&out, headerBlock.count)
        out.append(space)
        appendDecimal(&out, headerBlock.count + payload.count)
        out.append(cr)
        out.append(lf)
        out.append(contentsOf: headerBlock)
        out.append(contentsOf: payload)
        out.append(cr)
        out.append(lf)
    }

    static func appendDecimal(_ out: inout [UInt8], _ value: Int) {
        var divisor = 1
        while divisor <= value / 10 { divisor *= 10 }
        var v = value
        while divisor > 0 {
            out.append(UInt8(truncatingIfNeeded: 0x30 + v / divisor))
            v %= divisor
            divisor /= 10
        }
    }

    /// A subject is dot-separated non-empty tokens without spaces or line breaks; `*` and `>`
    /// are whole tokens, `>` only the last, and only subscriptions may use them. One pass over
    /// the bytes, no allocation.
    static func checkSubject(_ subject: String, wildcards: Bool) throws(NATSError) {
        var s = subject
        try s.withUTF8 { bytes in Result { () throws(NATSError) in try checkSubject(UnsafeRawBufferPointer(bytes), wildcards: wildcards) } }.get()
    }

    static func checkSubject(_ bytes: UnsafeRawBufferPointer, wildcards: Bool) throws(NATSError) {
        let verdict: String? = {
            guard !bytes.isEmpty else { return "is empty" }
            var tokenStart = 0
            var sawFullWildcard = false
            for i in 0...bytes.count {
                let b = i < bytes.count ? bytes[i] : dot
                if b == space || b == cr || b == lf || b == 9 { return "has a space or a line break" }
                guard b == dot else { continue }
                let length = i - tokenStart
                if length == 0 { return "has an empty token" }
                if sawFullWildcard { return "has '>' before its last token" }
                if length == 1 && (bytes[tokenStart] == 0x2A || bytes[tokenStart] == 0x3E) {
                    if !wildcards { return "has a wildcard, which only subscriptions may use" }
                    sawFullWildcard = bytes[tokenStart] == 0x3E
                }
                tokenStart = i + 1
            }
            return nil
        }()
        if let verdict { throw NATSError(.invalidArgument, "'\(String(decoding: bytes, as: UTF8.self))' is not a usable NATS subject: it \(verdict)") }
    }

    /// A header block made by the caller is one `append(to:)` could have made: `NATS/1.0\r\n`,
    /// `Name: value\r\n` lines (a name without ':' or spaces), `\r\n`; CR and LF only as pairs.
    static func checkHeaderBlock(_ b: UnsafeRawBufferPointer) throws(NATSError) {
        let version: StaticString = "NATS/1.0\r\n"
        let head = UnsafeRawBufferPointer(start: version.utf8Start, count: version.utf8CodeUnitCount)
        var ok = b.count >= head.count + 2 && memcmp(b.baseAddress!, head.baseAddress!, head.count) == 0 && b[b.count - 2] == cr && b[b.count - 1] == lf
        var i = head.count, lineStart = i, colon = -1
        while ok && i < b.count - 2 {
            switch b[i] {
            case cr:
                ok = b[i + 1] == lf && colon > lineStart  // a name before the colon
                i += 2
                lineStart = i
                colon = -1
                continue
            case lf: ok = false
            case 0x3A where colon < 0: colon = i
            case space, 9: ok = colon >= 0  // only in the value
            default: break
            }
            i += 1
        }
        guard ok, lineStart == b.count - 2 else {
            throw NATSError(.invalidArgument, "not a header block NATS can carry: \(String(decoding: b.prefix(200), as: UTF8.self))")
        }
    }
}

extension NATSHeaders {
    /// The size of the block `append(to:)` writes; refuses names and values NATS cannot carry.
    func encodedCount() throws(NATSError) -> Int {
        var total = 12  // "NATS/1.0\r\n" and the closing "\r\n"
        for (name, value) in fields {
            try Self.check(name: name, value: value)
            total += name.utf8.count + 2 + value.utf8.count + 2
        }
        return total
    }

    /// Refuses a field NATS cannot carry as one line: a name with ':', a space or a line break
    /// (or none at all), a value with a line break. Unchecked, `a\r\nB: c` would be two fields.
    static func check(name: String, value: String) throws(NATSError) {
        var ok = !name.isEmpty
        for b in name.utf8 where b == 0x3A || b == 0x20 || b == 13 || b == 10 { ok = false }
        for b in value.utf8 where b == 13 || b == 10 { ok = false }
        guard ok else {
            throw NATSError(.invalidArgument, "the header \(name) cannot be sent: names have no ':', spaces or line breaks, values no line breaks")
        }
    }

    /// Appends one `Name: value\r\n` line of a header block, for a caller building the block
    /// itself (`NATSClient.publishWithoutWaiting(subject:headerBlock:payload:)`); refuses a
    /// field that is not one line, as `encoded()` does.
    public static func appendLine(name: String, value: String, to out: inout [UInt8]) throws(NATSError) {
        try check(name: name, value: value)
        appendCheckedLine(name: name, value: value, to: &out)
    }

    private static func appendCheckedLine(name: String, value: String, to out: inout [UInt8]) {
        out.append(contentsOf: name.utf8)
        out.append(0x3A)
        out.append(0x20)
        out.append(contentsOf: value.utf8)
        out.append(13)
        out.append(10)
    }

    /// Writes the block: `NATS/1.0\r\n`, `Name: value\r\n` per field, `\r\n`. Check it with
    /// `encodedCount()` first.
    func append(to out: inout [UInt8]) {
        out.append(contentsOf: "NATS/1.0\r\n".utf8)
        for (name, value) in fields { Self.appendCheckedLine(name: name, value: value, to: &out) }
        out.append(13)
        out.append(10)
    }

    /// The header block as HPUB carries it.
    public func encoded() throws(NATSError) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(try encodedCount())
        append(to: &out)
        return out
    }
}
