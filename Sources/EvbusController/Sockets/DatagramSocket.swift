import CEvbusLinux
import EvbusIO
import Glibc

/// Your code for a UDP socket, Twisted's `DatagramProtocol`, called on the controller's thread.
public protocol DatagramProtocol: AnyObject {
    /// The socket is bound; keep `transport` to send from it.
    func startProtocol(_ transport: DatagramTransport)
    /// One datagram arrived (whole: UDP keeps message boundaries).
    func datagramReceived(_ data: [UInt8], from sender: SocketAddress)
    /// The socket was closed (`stopListening`, or the controller shut down).
    func stopProtocol()
}

extension DatagramProtocol {
    public func startProtocol(_ transport: DatagramTransport) {}
    public func stopProtocol() {}
}

/// A bound UDP socket. Use it on the controller's thread only.
public final class DatagramTransport {
    fileprivate let socket: DatagramSocket
    /// The address it is bound to (with the port the kernel chose, if asked for 0).
    public let host: SocketAddress
    public let controller: Controller

    fileprivate init(socket: DatagramSocket, host: SocketAddress, controller: Controller) {
        self.socket = socket
        self.host = host
        self.controller = controller
    }

    /// Datagrams `write` dropped because the kernel's send buffer was full.
    public private(set) var dropped = 0

    /// Sends one datagram to `address`. UDP gives no delivery guarantee, and neither does this:
    /// when the kernel's send buffer is full the datagram is dropped (and counted in `dropped`).
    /// - Throws: `badAddress`, or `socketFailed` for any other error (e.g. too large).
    public func write(_ data: [UInt8], to address: SocketAddress) throws(ControllerError) {
        precondition(controller.loop.inEventLoop, "a DatagramTransport was used off its controller's thread")
        let fd = socket.fd
        let sent = try address.withSockaddr { addr, length in
            data.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), addr, length) }
        }
        if sent >= 0 { return }
        if errno == EAGAIN || errno == EWOULDBLOCK {
            dropped += 1
            return
        }
        throw SocketCalls.failure("sendto", address)
    }

    public func write(_ text: String, to address: SocketAddress) throws(ControllerError) {
        try write(Array(text.utf8), to: address)
    }

    /// Closes the socket; `stopProtocol` follows.
    public func stopListening() { socket.close() }
}

/// The loop's side of a UDP socket: reads every waiting datagram on readiness. Loop-bound.
final class DatagramSocket: Selectable {
    let fd: Int32
    private let controller: Controller
    private let user: any DatagramProtocol
    private var registration: EventLoop.Registration?
    /// Big enough for any UDP datagram (64 KiB less headers).
    private var buffer = [UInt8](repeating: 0, count: 65_536)

    init(fd: Int32, controller: Controller, user: any DatagramProtocol) throws(ControllerError) {
        self.fd = fd
        self.controller = controller
        self.user = user
        do {
            registration = try controller.loop.register(fd, events: CEvbus_EPOLLIN, handler: self)
        } catch {
            throw ControllerError(.socketFailed, error.description)
        }
        user.startProtocol(DatagramTransport(socket: self, host: SocketAddress.of(fd, peer: false) ?? .inet(host: "", port: 0), controller: controller))
    }

    func ready(_ events: UInt32) {
        while registration != nil {
            var from = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let n = buffer.withUnsafeMutableBytes { raw in
                withUnsafeMutablePointer(to: &from) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, raw.baseAddress, raw.count, 0, $0, &length) }
                }
            }
            guard n >= 0 else { return }  // EAGAIN: all read (an ICMP error on a previous send also lands here)
            user.datagramReceived(Array(buffer[0..<n]), from: SocketAddress(from, length: length))
        }
    }

    func close() {
        guard let registration else { return }
        controller.loop.deregister(fd, registration)
        self.registration = nil
        Glibc.close(fd)
        user.stopProtocol()
    }
}
