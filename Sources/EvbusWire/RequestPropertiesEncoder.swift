/// The properties block of a request or a reply (PROTOCOL.md §5.7), written in place on the
/// request path: flags, then the correlation id, then reply-to (requests), then the encoded
/// header pairs if any, then the expiration (a request's: its caller's timeout). The fields are
/// the block's second, third, sixth and seventh in §5.7's order, so a block with only these
/// needs no other field.
public enum RequestPropertiesEncoder {
    /// Bytes of a block with a correlation id of `correlationIDCount` bytes, a reply-to of
    /// `replyToCount` bytes (nil: none), `headers` as `MessageProperties.encodedHeaders` gives them,
    /// and an expiration if `expires`.
    @inlinable
    public static func size(correlationIDCount: Int, replyToCount: Int?, headersCount: Int, expires: Bool = false) -> Int {
        1 + 2 + correlationIDCount + (replyToCount.map { 2 + $0 } ?? 0) + headersCount + (expires ? 4 : 0)
    }

    /// Writes the block. `writeCorrelationID` writes exactly `correlationIDCount` bytes (the id's
    /// bytes, after its length, which this writes).
    @inlinable
    public static func write(
        into w: inout ByteWriter, correlationIDCount: Int, _ writeCorrelationID: (inout ByteWriter) -> Void,
        replyTo: UnsafeRawBufferPointer?, headers: UnsafeRawBufferPointer, expirationMillis: UInt32? = nil
    ) {
        var flags = MessageProperties.Flag.correlationID
        if replyTo != nil { flags |= MessageProperties.Flag.replyTo }
        if !headers.isEmpty { flags |= MessageProperties.Flag.headers }
        if expirationMillis != nil { flags |= MessageProperties.Flag.expiration }
        w.u8(flags)
        w.u16(UInt16(correlationIDCount))
        writeCorrelationID(&w)
        if let replyTo { w.string(replyTo) }
        w.bytes(headers)
        if let expirationMillis { w.u32(expirationMillis) }  // the block's last field (§5.7)
    }
}

extension MessageProperties {
    /// The headers field of a block (count and pairs, sorted and capped as `encoded()` writes
    /// them), for `RequestPropertiesEncoder`; empty when there are no headers.
    public static func encodedHeaders(_ headers: [String: String]) -> [UInt8] {
        headers.isEmpty ? [] : Array(MessageProperties(headers: headers).encoded().dropFirst())
    }
}
