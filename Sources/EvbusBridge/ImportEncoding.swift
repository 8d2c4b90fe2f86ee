import Evbus
import EvbusNATS
import Glibc

/// The properties block of an imported NATS message (PROTOCOL.md, "Message properties"), written
/// straight from its header lines into a stack buffer: the bridge's fast way in, with no strings,
/// no dictionary and no `MessageProperties`. The result is what `MessageProperties` would encode
/// for the same message (docs/BRIDGE.md, "Mapping"): the `Evbus-Content-Type`,
/// `Evbus-Correlation-Id`, `Evbus-Message-Id` and `Evbus-Timestamp` headers become those fields
/// (the last of a repeated one counts), every other header is a header, and
/// `evbus-bridge-origin` is set to the origin. A message it cannot carry byte for byte (a field
/// over 65,535 bytes or not UTF-8, more headers than a block holds) gets nil: the decoding way
/// then replaces bytes that are not UTF-8, and refuses (drops, counted) what is too big.
///
/// One per subscription, made once: the header names it looks for are its own stored bytes (a
/// `static let` costs a once-check at every use, and there are several per header line).
struct ImportEncoding: Sendable {
    private let contentType = Array(Bridge.Header.contentType.utf8)
    private let correlationID = Array(Bridge.Header.correlationID.utf8)
    private let messageID = Array(Bridge.Header.messageID.utf8)
    private let timestamp = Array(Bridge.Header.timestamp.utf8)
    private let imported = Array(Bridge.Header.imported.utf8)
    private let origin = Array(Bridge.Header.origin.utf8)

    /// What the header lines hold, from a first pass (`scan`).
    struct Fields {
        /// The first `Evbus-Origin` (its name compared without ASCII case, as NATS compares): the
        /// bridge that sent it.
        var origin: UnsafeRawBufferPointer?
        var contentType: UnsafeRawBufferPointer?
        var correlationID: UnsafeRawBufferPointer?
        var messageID: UnsafeRawBufferPointer?
        var timestamp: UInt64?
        var headerCount = 1  // `evbus-bridge-origin`
        var headerBytes: Int
        var carried = true

        var size: Int {
            func field(_ f: UnsafeRawBufferPointer?) -> Int { f.map { 2 + $0.count } ?? 0 }
            return 1 + field(contentType) + field(correlationID) + field(messageID) + (timestamp == nil ? 0 : 8) + 2 + headerBytes
        }
    }

    /// The first pass over the header lines.
    func scan(_ m: NATSMessageView) -> Fields {
        var f = Fields(headerBytes: 4 + imported.count)
        m.forEachHeader { name, value in
            if same(name, contentType) { f.contentType = value; f.carried = f.carried && Self.fits(value) }
            else if same(name, correlationID) { f.correlationID = value; f.carried = f.carried && Self.fits(value) }
            else if same(name, messageID) { f.messageID = value; f.carried = f.carried && Self.fits(value) }
            else if same(name, timestamp) { f.timestamp = Self.decimal(value) }
            else if !same(name, imported) {  // ours replaces any
                if f.origin == nil, Self.sameIgnoringCase(name, origin) { f.origin = value }
                f.headerCount += 1
                f.headerBytes += 4 + name.count + value.count
                f.carried = f.carried && Self.fits(name) && Self.fits(value)
            }
        }
        return f
    }

    /// Calls `body` with the block, `evbus-bridge-origin` set to `origin`; nil (without calling
    /// it) when the message needs decoding.
    func withProperties<R>(_ m: NATSMessageView, _ scanned: Fields, origin: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R? {
        var f = scanned
        f.headerBytes += origin.count
        guard f.carried, Self.fits(origin), f.headerCount <= MessageProperties.maxHeaders else { return nil }
        return try withUnsafeTemporaryAllocation(byteCount: f.size, alignment: 1) { buffer in
            var w = ByteWriter(buffer.baseAddress!)
            typealias Flag = MessageProperties.Flag
            var flags = Flag.headers
            if f.contentType != nil { flags |= Flag.contentType }
            if f.correlationID != nil { flags |= Flag.correlationID }
            if f.messageID != nil { flags |= Flag.messageID }
            if f.timestamp != nil { flags |= Flag.timestamp }
            w.u8(flags)
            if let v = f.contentType { w.string(v) }
            if let v = f.correlationID { w.string(v) }
            if let v = f.messageID { w.string(v) }
            if let v = f.timestamp { w.u64(v) }
            w.u16(UInt16(f.headerCount))
            m.forEachHeader { name, value in
                guard !isField(name) else { return }
                w.string(name)
                w.string(value)
            }
            imported.withUnsafeBytes { w.string($0) }
            w.string(origin)
            return try body(UnsafeRawBufferPointer(start: buffer.baseAddress, count: w.offset))
        }
    }

    private func isField(_ name: UnsafeRawBufferPointer) -> Bool {
        same(name, contentType) || same(name, correlationID) || same(name, messageID) || same(name, timestamp) || same(name, imported)
    }

    /// Byte equality: the lengths first (most of these names differ in length), then memcmp.
    private func same(_ name: UnsafeRawBufferPointer, _ wanted: [UInt8]) -> Bool {
        name.count == wanted.count && wanted.withUnsafeBytes { memcmp($0.baseAddress!, name.baseAddress!, name.count) == 0 }
    }

    private static func sameIgnoringCase(_ name: UnsafeRawBufferPointer, _ wanted: [UInt8]) -> Bool {
        guard name.count == wanted.count else { return false }
        for i in 0..<name.count where name[i] != wanted[i] {
            let lower = name[i] | 0x20
            guard lower >= 0x61, lower <= 0x7A, lower == wanted[i] | 0x20 else { return false }
        }
        return true
    }

    /// A string field can carry it as it is.
    private static func fits(_ b: UnsafeRawBufferPointer) -> Bool {
        b.count <= Int(UInt16.max) && UTF8Check.isValid(b)
    }

    /// `UInt64(text)` from bytes: nil unless all decimal digits and in range.
    private static func decimal(_ b: UnsafeRawBufferPointer) -> UInt64? {
        guard !b.isEmpty else { return nil }
        var v: UInt64 = 0
        for byte in b {
            let d = byte &- 0x30
            guard d < 10 else { return nil }
            let (times10, o1) = v.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times10.addingReportingOverflow(UInt64(d))
            guard !o1, !o2 else { return nil }
            v = sum
        }
        return v
    }
}
