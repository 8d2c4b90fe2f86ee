import CEvbusLinux
import Glibc

/// The socket system calls behind listening, connecting and datagrams, each failure turned into
/// a `ControllerError` that names the call, the address and errno.
enum SocketCalls {
    static func failure(_ call: String, _ address: SocketAddress, _ code: Int32 = errno) -> ControllerError {
        ControllerError(.socketFailed, "\(call)(\(address)) failed: \(String(cString: strerror(code))) (errno \(code))")
    }

    /// A non-blocking, close-on-exec socket of the address's family.
    static func open(_ address: SocketAddress, type: Int32) throws(ControllerError) -> Int32 {
        let fd = socket(address.family, type | CEvbus_SOCK_NONBLOCK | CEvbus_SOCK_CLOEXEC, 0)
        guard fd >= 0 else { throw failure("socket", address) }
        return fd
    }

    /// A socket bound to `address` (reusing a TCP port in TIME_WAIT, as servers do).
    static func bound(_ address: SocketAddress, type: Int32) throws(ControllerError) -> Int32 {
        let fd = try open(address, type: type)
        var one: Int32 = 1
        if address.family != AF_UNIX {
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        let r: Int32
        do throws(ControllerError) {
            r = try address.withSockaddr { bind(fd, $0, $1) }
        } catch {
            Glibc.close(fd)
            throw error
        }
        if r != 0 {
            let error = failure("bind", address)
            Glibc.close(fd)
            throw error
        }
        return fd
    }

    static var stream: Int32 { Int32(SOCK_STREAM.rawValue) }
    static var datagram: Int32 { Int32(SOCK_DGRAM.rawValue) }
}
