/// The on-disk layout of the persistence log (docs/DURABILITY.md once the durable queues use it).
///
/// A segment file starts with an 8-byte header, `45 56 42 4C 4F 47 01 00` ("EVBLOG", format 1,
/// reserved 0), then records back to back. A record is `u32 length` (of the body, little-endian),
/// `u32 crc32c` (of the body), then the body. A length of 0 is never written, so a run of zero bytes
/// (a preallocated or zero-filled tail) reads as the end of the log, not as records.
enum LogFormat {
    static let header: [UInt8] = [0x45, 0x56, 0x42, 0x4C, 0x4F, 0x47, 0x01, 0x00]
    static let recordHeaderSize = 8
    /// The largest body a record may have: a stored message is at most the largest frame (64 MiB)
    /// plus a little; anything longer in a length field is damage.
    static let maxBody = 64 << 20 + 4096

    /// The record that starts at `offset` of `bytes`, if a whole, intact one does.
    static func record(in bytes: UnsafeRawBufferPointer, at offset: Int) -> (body: UnsafeRawBufferPointer, end: Int)? {
        guard bytes.count - offset >= recordHeaderSize else { return nil }
        let length = Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
        let crc = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self))
        guard length > 0, length <= maxBody, bytes.count - offset - recordHeaderSize >= length else { return nil }
        let body = UnsafeRawBufferPointer(rebasing: bytes[(offset + recordHeaderSize)..<(offset + recordHeaderSize + length)])
        guard CRC32C.checksum(body) == crc else { return nil }
        return (body, offset + recordHeaderSize + length)
    }

    /// Appends one framed record to `out`.
    static func append(_ body: UnsafeRawBufferPointer, to out: inout [UInt8]) {
        precondition(!body.isEmpty && body.count <= maxBody, "a log record's body is 1 to \(maxBody) bytes")
        withUnsafeBytes(of: UInt32(body.count).littleEndian) { out.append(contentsOf: $0) }
        withUnsafeBytes(of: CRC32C.checksum(body).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: body)
    }

    /// Fills the checksum slot of every record in a buffer framed by `RecordWriter`.
    static func fillChecksums(_ bytes: UnsafeMutableRawBufferPointer) {
        var offset = 0
        while offset + recordHeaderSize <= bytes.count {
            let length = Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
            let body = UnsafeRawBufferPointer(rebasing: bytes[(offset + recordHeaderSize)..<(offset + recordHeaderSize + length)])
            bytes.storeBytes(of: CRC32C.checksum(body).littleEndian, toByteOffset: offset + 4, as: UInt32.self)
            offset += recordHeaderSize + length
        }
    }
}
