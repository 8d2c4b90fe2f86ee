import CEvbusLinux
import Glibc

/// Where a socket is bound or connected: a Unix socket path, or a numeric IPv4/IPv6 address and a
/// port. Names are not resolved (a lookup would block the loop), except `localhost`.
public enum SocketAddress: Hashable, Sendable, CustomStringConvertible {
    case unix(path: String)
    /// `host` is numeric (`127.0.0.1`, `::1`), `localhost`, or empty / `0.0.0.0` / `::` for any.
    case inet(host: String, port: UInt16)

    /// An IPv4 or IPv6 address; `port` 0 lets the kernel choose (see the bound address it reports).
    public static func tcp(_ host: String, _ port: UInt16) -> SocketAddress { .inet(host: host, port: port) }
    public static func udp(_ host: String, _ port: UInt16) -> SocketAddress { .inet(host: host, port: port) }

    public var description: String {
        switch self {
        case .unix(let path): "unix:\(path)"
        case .inet(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        }
    }

    /// The port of an inet address (nil for Unix).
    public var port: UInt16? { if case .inet(_, let port) = self { port } else { nil } }

    var family: Int32 {
        switch self {
        case .unix: AF_UNIX
        case .inet(let host, _): Self.numericHost(host).contains(":") ? AF_INET6 : AF_INET
        }
    }

    private static func numericHost(_ host: String) -> String {
        switch host {
        case "", "*": "0.0.0.0"
        case "localhost": "127.0.0.1"
        default: host
        }
    }

    /// Calls `body` with this address as a `sockaddr`.
    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) throws(ControllerError) -> R {
        var storage = sockaddr_storage()
        let length: Int
        switch self {
        case .unix(let path):
            let bytes = Array(path.utf8)
            var un = sockaddr_un()
            guard !bytes.isEmpty, bytes.count < MemoryLayout.size(ofValue: un.sun_path) else {
                throw ControllerError(.badAddress, "the Unix socket path '\(path)' is empty or longer than \(MemoryLayout.size(ofValue: un.sun_path) - 1) bytes")
            }
            un.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &un.sun_path) { $0.copyBytes(from: bytes) }
            withUnsafeMutableBytes(of: &storage) { $0.storeBytes(of: un, as: sockaddr_un.self) }
            length = MemoryLayout<sockaddr_un>.size
        case .inet(let host, let port):
            let numeric = Self.numericHost(host)
            if numeric.contains(":") {
                var in6 = sockaddr_in6()
                in6.sin6_family = sa_family_t(AF_INET6)
                in6.sin6_port = port.bigEndian
                guard inet_pton(AF_INET6, numeric, &in6.sin6_addr) == 1 else { throw Self.notNumeric(host) }
                withUnsafeMutableBytes(of: &storage) { $0.storeBytes(of: in6, as: sockaddr_in6.self) }
                length = MemoryLayout<sockaddr_in6>.size
            } else {
                var in4 = sockaddr_in()
                in4.sin_family = sa_family_t(AF_INET)
                in4.sin_port = port.bigEndian
                guard inet_pton(AF_INET, numeric, &in4.sin_addr) == 1 else { throw Self.notNumeric(host) }
                withUnsafeMutableBytes(of: &storage) { $0.storeBytes(of: in4, as: sockaddr_in.self) }
                length = MemoryLayout<sockaddr_in>.size
            }
        }
        return withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(length)) }
        }
    }

    private static func notNumeric(_ host: String) -> ControllerError {
        ControllerError(.badAddress, "'\(host)' is not a numeric IPv4 or IPv6 address (names other than localhost are not resolved)")
    }

    /// The address the kernel filled in (`getsockname`, `getpeername`, `recvfrom`).
    init(_ storage: sockaddr_storage, length: socklen_t) {
        var storage = storage
        switch Int32(storage.ss_family) {
        case AF_INET:
            let in4 = withUnsafeBytes(of: &storage) { $0.load(as: sockaddr_in.self) }
            var addr = in4.sin_addr
            var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
            inet_ntop(AF_INET, &addr, &text, socklen_t(text.count))
            self = .inet(host: String(decoding: text.prefix { $0 != 0 }.map(UInt8.init), as: UTF8.self), port: UInt16(bigEndian: in4.sin_port))
        case AF_INET6:
            let in6 = withUnsafeBytes(of: &storage) { $0.load(as: sockaddr_in6.self) }
            var addr = in6.sin6_addr
            var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            inet_ntop(AF_INET6, &addr, &text, socklen_t(text.count))
            self = .inet(host: String(decoding: text.prefix { $0 != 0 }.map(UInt8.init), as: UTF8.self), port: UInt16(bigEndian: in6.sin6_port))
        default:
            // Unix: the path runs to the first NUL (an unbound client socket has none).
            let pathOffset = MemoryLayout<sa_family_t>.size
            let bytes = withUnsafeBytes(of: &storage) { raw in
                Array(raw[pathOffset..<max(pathOffset, min(Int(length), raw.count))]).prefix { $0 != 0 }
            }
            self = .unix(path: String(decoding: bytes, as: UTF8.self))
        }
    }

    /// The local or remote address of a socket.
    static func of(_ fd: Int32, peer: Bool) -> SocketAddress? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let r = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { peer ? getpeername(fd, $0, &length) : getsockname(fd, $0, &length) }
        }
        return r == 0 ? SocketAddress(storage, length: length) : nil
    }
}
