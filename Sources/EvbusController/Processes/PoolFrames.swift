/// The frames a process pool and its workers exchange over their private socket pair (not the
/// bus protocol): `u32` length of the rest, `u8` kind, `u64` job id, then the body, all
/// little-endian. Work carries `u16` event-name length, the name, then the compact-encoded input;
/// a result the compact-encoded output; a failure the error's text. A worker says `ready` (id 0)
/// once its handlers are installed.
enum PoolFrame {
    enum Kind: UInt8 {
        case work = 1, result = 2, failure = 3, ready = 4
    }

    static let headerBytes = 4 + 1 + 8

    static func encode(_ kind: Kind, id: UInt64, body: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(headerBytes + body.count)
        let length = UInt32(1 + 8 + body.count)
        withUnsafeBytes(of: length.littleEndian) { out += $0 }
        out.append(kind.rawValue)
        withUnsafeBytes(of: id.littleEndian) { out += $0 }
        out += body
        return out
    }

    static func work(id: UInt64, event: String, input: [UInt8]) -> [UInt8] {
        let name = Array(event.utf8.prefix(Int(UInt16.max)))
        var body: [UInt8] = []
        withUnsafeBytes(of: UInt16(name.count).littleEndian) { body += $0 }
        return encode(.work, id: id, body: body + name + input)
    }

    /// Splits `(event, input)` out of a work frame's body.
    static func parseWork(_ body: ArraySlice<UInt8>) -> (event: String, input: [UInt8])? {
        guard body.count >= 2 else { return nil }
        let n = Int(body[body.startIndex]) | Int(body[body.startIndex + 1]) << 8
        guard body.count >= 2 + n else { return nil }
        let nameStart = body.startIndex + 2
        return (String(decoding: body[nameStart..<(nameStart + n)], as: UTF8.self), Array(body[(nameStart + n)...]))
    }
}

/// Collects bytes from a stream and hands out whole frames.
struct PoolFrameReader {
    private var buffer: [UInt8] = []
    /// The longest frame accepted (a corrupt length must not make it wait for gigabytes).
    static let maxFrame = 256 << 20

    struct Corrupt: Error {}

    mutating func append(_ bytes: [UInt8]) { buffer += bytes }

    /// The next whole frame, nil if more bytes are needed; throws on a length no frame has.
    mutating func next() throws -> (kind: PoolFrame.Kind, id: UInt64, body: ArraySlice<UInt8>)? {
        guard buffer.count >= 4 else { return nil }
        let length = Int(UInt32(buffer[0]) | UInt32(buffer[1]) << 8 | UInt32(buffer[2]) << 16 | UInt32(buffer[3]) << 24)
        guard length >= 9, length <= Self.maxFrame else { throw Corrupt() }
        guard buffer.count >= 4 + length else { return nil }
        guard let kind = PoolFrame.Kind(rawValue: buffer[4]) else { throw Corrupt() }
        var id: UInt64 = 0
        for i in 0..<8 { id |= UInt64(buffer[5 + i]) << (8 * UInt64(i)) }
        let body = buffer[13..<(4 + length)]
        let frame = (kind, id, ArraySlice(Array(body)))
        buffer.removeFirst(4 + length)
        return frame
    }
}
