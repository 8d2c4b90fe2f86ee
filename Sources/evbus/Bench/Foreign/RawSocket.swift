import EvbusIO
import Foundation

/// A blocking socket for the foreign-broker load generators: TCP (`host:port`) or Unix (a path).
/// Bench-only; evbus itself never uses blocking sockets.
/// One thread writes and one thread reads, which the kernel allows on a socket.
final class RawSocket: Sendable {
    let fd: Int32

    init(address: String) throws {
        if address.hasPrefix("/") {
            fd = try UnixSocket.connect(path: address)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
            return
        }
        let parts = address.split(separator: ":")
        guard parts.count == 2, let port = UInt16(parts[1]) else { throw BenchError("bad address \(address) (want host:port or /path)") }
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        inet_pton(AF_INET, String(parts[0]), &addr.sin_addr)
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard r == 0 else { throw BenchError("cannot connect to \(address): errno \(errno)") }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit { close(fd) }

    func write(_ bytes: UnsafeRawBufferPointer) {
        var offset = 0
        while offset < bytes.count {
            let n = send(fd, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
            if n <= 0 { if errno == EINTR { continue }; return }
            offset += n
        }
    }

    func write(_ bytes: [UInt8]) { bytes.withUnsafeBytes { write($0) } }
    func write(_ text: String) { write(Array(text.utf8)) }

    /// Reads into `buffer[from...]`; returns the count (0 at EOF).
    func read(into buffer: UnsafeMutableRawBufferPointer, from: Int) -> Int {
        while true {
            let n = recv(fd, buffer.baseAddress! + from, buffer.count - from, 0)
            if n < 0 && errno == EINTR { continue }
            return max(n, 0)
        }
    }
}

/// A growable receive buffer with a parse position, for line/length-prefixed text protocols.
struct ReceiveBuffer {
    var storage = UnsafeMutableRawBufferPointer.allocate(byteCount: 8 << 20, alignment: 8)
    var start = 0
    var end = 0

    /// Reads more from `socket`, compacting first; false at EOF.
    mutating func fill(from socket: RawSocket) -> Bool {
        if start > 0 {
            if end > start { memmove(storage.baseAddress!, storage.baseAddress! + start, end - start) }
            end -= start
            start = 0
        }
        let n = socket.read(into: storage, from: end)
        end += n
        return n > 0
    }

    /// Index of the next "\r\n" at or after `from`, or nil.
    func crlf(from: Int) -> Int? {
        var i = from
        while i + 1 < end {
            if storage[i] == 13 && storage[i + 1] == 10 { return i }
            i += 1
        }
        return nil
    }

    /// Parses the decimal number in storage[from..<to].
    func number(_ from: Int, _ to: Int) -> Int {
        var n = 0
        for i in from..<to where storage[i] >= 48 && storage[i] <= 57 { n = n * 10 + Int(storage[i] - 48) }
        return n
    }
}
