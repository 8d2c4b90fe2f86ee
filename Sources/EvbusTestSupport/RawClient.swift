import EvbusIO
public import EvbusWire
import Foundation

/// A deliberately dumb blocking client that sends exact bytes and reads frames back: for testing
/// how the broker treats malformed or hostile input. Not for anything else.
public final class RawClient {
    public let fd: Int32
    private var buffer: [UInt8] = []

    public init(socketPath: String) throws {
        fd = try UnixSocket.connect(path: socketPath)
        // Make it blocking with a receive timeout, so a missing answer fails the test instead of hanging.
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK)
        var tv = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    /// Connects and completes the handshake.
    public static func handshaken(_ socketPath: String, name: String = "raw") throws -> RawClient {
        let c = try RawClient(socketPath: socketPath)
        c.send(WireFormat.preamble + Frame.hello(clientName: name).encoded())
        guard case .welcome = try c.readFrame() else { throw TestSupportError("expected WELCOME") }
        return c
    }

    public func send(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Foundation.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            offset += n
        }
    }

    public func send(_ frame: Frame) { send(frame.encoded()) }

    /// Reads one frame, or throws on timeout or EOF.
    public func readFrame() throws -> Frame {
        while true {
            let parsed: (Frame, Int)? = try buffer.withUnsafeBytes { raw in
                switch try FrameSplitter.next(raw, maxFrame: WireFormat.maxMaxFrame + 64) {
                case .needMore: return nil
                case .frame(let f, let consumed): return (try Frame.decode(type: f.type, body: f.body), consumed)
                }
            }
            if let (frame, consumed) = parsed {
                buffer.removeFirst(consumed)
                return frame
            }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { throw TestSupportError("connection closed by the broker") }
            if n < 0 { throw TestSupportError("read failed or timed out (errno \(errno))") }
            buffer.append(contentsOf: chunk[0..<n])
        }
    }

    /// Bytes received that do not (yet) make a whole frame: after EOF, a torn last frame.
    public var unparsedBytes: Int { buffer.count }

    /// Reads frames until the broker closes the connection; returns them all.
    public func readUntilClosed() -> [Frame] {
        var frames: [Frame] = []
        while let f = try? readFrame() { frames.append(f) }
        return frames
    }

    /// True once the broker has closed the connection (EOF).
    public func isClosedByBroker() -> Bool {
        var byte: UInt8 = 0
        return recv(fd, &byte, 1, 0) == 0
    }
}
