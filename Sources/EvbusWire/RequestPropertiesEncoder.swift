/// The properties block of a request or a reply (PROTOCOL.md §5.7), written in place on the
/// request path: flags, then the correlation id, then reply-to (requests), then the encoded
/// header pairs if any. The fields are the block's second, third and sixth in §5.7's order, so a
/// block with only these needs no other field.
public enum RequestPropertiesEncoder {
    /// Bytes of a block with a correlation id of `correlationIDCount` bytes, a reply-to of
    /// `replyToCount` bytes (nil: none) and `headers` as `MessageProperties.encodedHeaders` gives them.
    @inlinable
    public static func size(correlationIDCount: Int, replyToCount: Int?, headersCount: Int) -> Int {
        1 + 2 + correlationIDCount + (replyToCount.map { 2 + $0 } ?? 0) + headersCount
    }

    /// Writes the block. `writeCorrelationID` writes exactly `correlationIDCount` bytes (the id's
    /// bytes, after its length, which this writes).
    @inlinable
    public static func write(
        into w: inout ByteWriter, correlationIDCount: Int, _ writeCorrelationID: (inout ByteWriter) -> Void,
        replyTo: UnsafeRawBufferPointer?, headers: UnsafeRawBufferPointer
    ) {
        var flags = MessageProperties.Flag.correlationID
        if replyTo != nil { flags |= MessageProperties.Flag.replyTo }
        if !headers.isEmpty { flags |= MessageProperties.Flag.headers }
        w.u8(flags)
        w.u16(UInt16(correlationIDCount))
        writeCorrelationID(&w)
        if let replyTo { w.string(replyTo) }
        w.bytes(headers)
    }
}

extension MessageProperties {
    /// The headers field of a block (count and pairs, sorted and capped as `encoded()` writes
    /// them), for `RequestPropertiesEncoder`; empty when there are no headers.
    public static func encodedHeaders(_ headers: [String: String]) -> [UInt8] {
        headers.isEmpty ? [] : Array(MessageProperties(headers: headers).encoded().dropFirst())
    }
}
