/// Fixed numbers of the evbus wire protocol, version 1. `docs/PROTOCOL.md` is the contract; keep both in step.
public enum WireFormat {
    /// The 6 magic bytes that open every connection: "EVBUS" and a NUL.
    public static let magic: [UInt8] = [0x45, 0x56, 0x42, 0x55, 0x53, 0x00]
    /// Preamble = magic + u16 little-endian protocol version.
    public static let preambleSize = 8
    /// The only protocol version this build speaks.
    public static let version: UInt16 = 1
    /// Every frame starts with a u32 length (of type + body) and a u8 type.
    public static let headerSize = 5
    /// Largest frame a peer may send before the handshake completes (HELLO is small).
    public static let maxHandshakeFrame = 4096
    /// Default and absolute ceiling for the negotiated maximum frame length.
    public static let defaultMaxFrame = 1 << 20
    public static let maxMaxFrame = 64 << 20
    /// Topics and patterns are 1...255 bytes of UTF-8.
    public static let maxTopicBytes = 255
    /// Client and broker names are at most 255 bytes of UTF-8.
    public static let maxNameBytes = 255

    /// The 8 bytes a client sends first.
    public static var preamble: [UInt8] {
        magic + [UInt8(truncatingIfNeeded: version), UInt8(truncatingIfNeeded: version >> 8)]
    }
}
