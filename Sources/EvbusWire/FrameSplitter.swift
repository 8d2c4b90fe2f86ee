/// One frame located in a byte stream: its type and a view of its body. Valid only as long as the
/// bytes it was split from.
public struct RawFrame {
    public var type: FrameType
    public var body: UnsafeRawBufferPointer

    @inlinable
    public init(type: FrameType, body: UnsafeRawBufferPointer) {
        self.type = type
        self.body = body
    }
}

/// Finds frame boundaries in received bytes without copying.
///
/// The length is checked against `maxFrame` as soon as its 4 bytes are present, before anyone
/// allocates or waits for the body, so an oversized frame costs the broker nothing.
public enum FrameSplitter {
    public enum Result {
        /// A whole frame; `consumed` bytes (header + body) can be discarded after handling it.
        case frame(RawFrame, consumed: Int)
        /// Not enough bytes yet.
        case needMore
    }

    @inlinable
    public static func next(_ bytes: UnsafeRawBufferPointer, maxFrame: Int) throws(WireError) -> Result {
        guard bytes.count >= WireFormat.headerSize else {
            if bytes.count >= 4 { try checkLength(bytes, maxFrame: maxFrame) }
            return .needMore
        }
        let length = try checkLength(bytes, maxFrame: maxFrame)
        let typeByte = bytes[4]
        guard let type = FrameType(rawValue: typeByte) else {
            throw WireError(.unknownFrameType, "unknown frame type 0x\(String(typeByte, radix: 16))")
        }
        let total = 4 + length
        guard bytes.count >= total else { return .needMore }
        let body = UnsafeRawBufferPointer(rebasing: bytes[WireFormat.headerSize..<total])
        return .frame(RawFrame(type: type, body: body), consumed: total)
    }

    @inlinable @discardableResult
    static func checkLength(_ bytes: UnsafeRawBufferPointer, maxFrame: Int) throws(WireError) -> Int {
        let length = Int(UInt32(littleEndian: bytes.loadUnaligned(as: UInt32.self)))
        guard length >= 1 else {
            throw WireError(.malformedFrame, "frame length 0: every frame has at least a type byte")
        }
        guard length <= maxFrame else {
            throw WireError(.frameTooLarge, "frame of \(length) bytes exceeds the limit of \(maxFrame) bytes")
        }
        return length
    }
}

/// Checks the 8-byte connection preamble a client sends first.
public enum Preamble {
    /// `nil` if more bytes are needed; throws bad-magic or unsupported-version.
    public static func check(_ bytes: UnsafeRawBufferPointer) throws(WireError) -> UInt16? {
        let magic = WireFormat.magic
        for i in 0..<min(bytes.count, magic.count) where bytes[i] != magic[i] {
            throw WireError(.badMagic, "connection did not start with the evbus preamble \"EVBUS\\0\" (is this an evbus client?)")
        }
        guard bytes.count >= WireFormat.preambleSize else { return nil }
        let version = UInt16(bytes[6]) | UInt16(bytes[7]) << 8
        guard version == WireFormat.version else {
            throw WireError(.unsupportedVersion, "protocol version \(version) is not supported; this broker speaks version \(WireFormat.version)")
        }
        return version
    }
}
