/// Reads little-endian fields from a frame body without copying. A field that runs past the end
/// of the body throws `malformed-frame` naming the field, so truncation never reads out of bounds.
public struct ByteReader {
    public let bytes: UnsafeRawBufferPointer
    public var offset: Int = 0

    @inlinable
    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    public var remaining: Int { bytes.count - offset }

    /// Built out of line so the field readers stay small enough to inline.
    @usableFromInline @inline(never)
    func truncated(_ field: StaticString, needs n: Int) -> WireError {
        WireError(.malformedFrame, "truncated field '\(field)': needs \(n) bytes, \(bytes.count - offset) left")
    }

    @inlinable @inline(__always)
    mutating func take(_ n: Int, _ field: StaticString) throws(WireError) -> UnsafeRawBufferPointer {
        guard n <= bytes.count - offset else { throw truncated(field, needs: n) }
        let slice = UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + n])
        offset += n
        return slice
    }

    @inlinable
    public mutating func u8(_ field: StaticString) throws(WireError) -> UInt8 {
        try take(1, field)[0]
    }

    @inlinable
    public mutating func u16(_ field: StaticString) throws(WireError) -> UInt16 {
        UInt16(littleEndian: try take(2, field).loadUnaligned(as: UInt16.self))
    }

    @inlinable
    public mutating func u32(_ field: StaticString) throws(WireError) -> UInt32 {
        UInt32(littleEndian: try take(4, field).loadUnaligned(as: UInt32.self))
    }

    @inlinable
    public mutating func u64(_ field: StaticString) throws(WireError) -> UInt64 {
        UInt64(littleEndian: try take(8, field).loadUnaligned(as: UInt64.self))
    }

    /// A u16 length followed by that many bytes, returned as a view (not validated as UTF-8).
    @inlinable
    public mutating func stringBytes(_ field: StaticString) throws(WireError) -> UnsafeRawBufferPointer {
        let count = Int(try u16(field))
        return try take(count, field)
    }

    /// A u16-prefixed string that must be valid UTF-8 and at most `maxBytes` long.
    public mutating func string(_ field: StaticString, maxBytes: Int = Int(UInt16.max)) throws(WireError) -> String {
        let raw = try stringBytes(field)
        guard raw.count <= maxBytes else {
            throw WireError(.malformedFrame, "field '\(field)' is \(raw.count) bytes; the limit is \(maxBytes)")
        }
        // ASCII (nearly every name, id and key) needs no generic validation.
        if UTF8Check.isASCII(raw) { return String(decoding: raw, as: UTF8.self) }
        guard let text = String(validating: raw, as: UTF8.self) else {
            throw WireError(.malformedFrame, "field '\(field)' is not valid UTF-8")
        }
        return text
    }

    /// A u16-prefixed string checked to be valid UTF-8, returned in place (no `String` made).
    @inlinable
    public mutating func checkedStringBytes(_ field: StaticString) throws(WireError) -> UnsafeRawBufferPointer {
        let raw = try stringBytes(field)
        guard UTF8Check.isValid(raw) else { throw WireError(.malformedFrame, "field '\(field)' is not valid UTF-8") }
        return raw
    }

    /// The next `n` bytes as a view.
    @inlinable
    public mutating func fixed(_ n: Int, _ field: StaticString = "bytes") throws(WireError) -> UnsafeRawBufferPointer {
        try take(n, field)
    }

    /// Everything left in the body (a payload).
    @inlinable
    public mutating func rest() -> UnsafeRawBufferPointer {
        let slice = UnsafeRawBufferPointer(rebasing: bytes[offset...])
        offset = bytes.count
        return slice
    }

    /// Fails when a fixed-layout body has bytes left over.
    public func expectEnd(_ frame: StaticString) throws(WireError) {
        guard remaining == 0 else {
            throw WireError(.malformedFrame, "\(remaining) unexpected trailing bytes in \(frame) frame")
        }
    }
}

/// UTF-8 checks on bytes in place, with a fast path for ASCII.
public enum UTF8Check {
    /// All bytes below 0x80: eight at a time, then the rest.
    @inlinable
    public static func isASCII(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let base = bytes.baseAddress else { return true }
        var i = 0
        var high: UInt64 = 0
        while i + 8 <= bytes.count {
            high |= base.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            i += 8
        }
        while i < bytes.count {
            high |= UInt64(base.load(fromByteOffset: i, as: UInt8.self))
            i += 1
        }
        return high & 0x8080_8080_8080_8080 == 0
    }

    /// Valid UTF-8 (the standard library's validation for anything that is not ASCII).
    @inlinable
    public static func isValid(_ bytes: UnsafeRawBufferPointer) -> Bool {
        isASCII(bytes) || String(validating: bytes, as: UTF8.self) != nil
    }
}
