/// Writes little-endian fields into memory the caller reserved (the hot path encodes straight into a
/// connection's write queue). The caller computes the size first; the writer never checks bounds.
public struct ByteWriter {
    public let base: UnsafeMutableRawPointer
    public var offset: Int = 0

    @inlinable
    public init(_ base: UnsafeMutableRawPointer) { self.base = base }

    @inlinable
    public mutating func u8(_ v: UInt8) {
        base.storeBytes(of: v, toByteOffset: offset, as: UInt8.self)
        offset += 1
    }

    @inlinable
    public mutating func u16(_ v: UInt16) {
        base.storeBytes(of: v.littleEndian, toByteOffset: offset, as: UInt16.self)
        offset += 2
    }

    @inlinable
    public mutating func u32(_ v: UInt32) {
        base.storeBytes(of: v.littleEndian, toByteOffset: offset, as: UInt32.self)
        offset += 4
    }

    @inlinable
    public mutating func u64(_ v: UInt64) {
        base.storeBytes(of: v.littleEndian, toByteOffset: offset, as: UInt64.self)
        offset += 8
    }

    @inlinable
    public mutating func bytes(_ b: UnsafeRawBufferPointer) {
        if let src = b.baseAddress, b.count > 0 {
            (base + offset).copyMemory(from: src, byteCount: b.count)
        }
        offset += b.count
    }

    /// A properties block: almost always the single byte "none", written without a memcpy call.
    @inlinable
    public mutating func properties(_ block: UnsafeRawBufferPointer) {
        if block.count == 1 { u8(block[0]) } else { bytes(block) }
    }

    /// A u16 length and the bytes. Callers guarantee `b.count <= UInt16.max`.
    @inlinable
    public mutating func string(_ b: UnsafeRawBufferPointer) {
        u16(UInt16(truncatingIfNeeded: b.count))
        bytes(b)
    }

    /// The 5-byte frame header for a body of `bodyCount` bytes.
    @inlinable
    public mutating func header(_ type: FrameType, bodyCount: Int) {
        u32(UInt32(truncatingIfNeeded: bodyCount + 1))
        u8(type.rawValue)
    }
}
