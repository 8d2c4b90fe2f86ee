import Glibc
import EvbusIO

/// An open listener or UDP socket: its bound address (with the port the kernel chose when asked
/// for 0), and `close()`, safe from any thread. The controller closes it too when it stops.
public final class SocketHandle: Sendable {
    public let address: SocketAddress
    private let closer: LoopBound<() -> Void>

    init(address: SocketAddress, closer: LoopBound<() -> Void>) {
        self.address = address
        self.closer = closer
    }

    public func close() {
        let closer = self.closer
        if closer.loop.inEventLoop {
            closer.value()
        } else {
            try? closer.loop.execute { closer.value() }  // a stopped loop has closed it already
        }
    }
}

extension Controller {
    /// Accepts stream connections on `address` (TCP, or a Unix socket path, which must not
    /// exist), each handled by a new protocol from `factory` on this controller's thread.
    /// - Throws: `badAddress`, `socketFailed` (bind or listen refused: in use, no permission).
    @discardableResult
    public func listen(
        on address: SocketAddress, backlog: Int32 = 128, _ factory: @escaping @Sendable () -> any StreamProtocol
    ) throws(ControllerError) -> SocketHandle {
        let fd = try SocketCalls.bound(address, type: SocketCalls.stream)
        guard Glibc.listen(fd, backlog) == 0 else {
            let error = SocketCalls.failure("listen", address)
            Glibc.close(fd)
            throw error
        }
        let bound = SocketAddress.of(fd, peer: false).map { address.family == AF_UNIX ? address : $0 } ?? address
        return try onLoop { [self] () throws(ControllerError) -> SocketHandle in
            guard engineOnLoop != nil else { throw shutDownError }  // stopped: its loop is ending
            let listener = try StreamListener(fd: fd, address: bound, controller: self, factory: factory)
            return handle(bound, closing: listener) { listener.close() }
        } orClose: { Glibc.close(fd) }
    }

    /// Connects to a stream server; `make` gives the protocol for the connection, which hears
    /// `connectionMade` once it is up. The Pending resolves then, or fails with `socketFailed`
    /// (refused, unreachable), `badAddress`, or `timedOut` when a `timeout` is given and nothing
    /// answered within it (without one, a host that drops the connect is waited for as long as
    /// the kernel retries: minutes).
    @discardableResult
    public func connect(
        to address: SocketAddress, timeout: Duration? = nil, _ make: @escaping @Sendable () -> any StreamProtocol
    ) -> Pending<Void> {
        let done = Pending<Void>(loop: loop)
        let fd: Int32
        do { fd = try SocketCalls.open(address, type: SocketCalls.stream) } catch {
            done.resolve(.failure(error))
            return done
        }
        let start: @Sendable () -> Void = { [self] in
            guard engineOnLoop != nil else {  // stopped: its loop is ending
                Glibc.close(fd)
                return done.resolve(.failure(shutDownError))
            }
            StreamConnector(fd: fd, address: address, controller: self, user: make(), done: done, timeout: timeout).start()
        }
        if loop.inEventLoop { start() } else if (try? loop.execute(start)) == nil {
            Glibc.close(fd)
            done.resolve(.failure(shutDownError))
        }
        return done
    }

    /// Binds a UDP socket to `address` (port 0 for any: a client) and hands it to the protocol
    /// from `make`, on this controller's thread.
    @discardableResult
    public func listenUDP(on address: SocketAddress, _ make: @escaping @Sendable () -> any DatagramProtocol) throws(ControllerError) -> SocketHandle {
        let fd = try SocketCalls.bound(address, type: SocketCalls.datagram)
        let bound = SocketAddress.of(fd, peer: false) ?? address
        return try onLoop { [self] () throws(ControllerError) -> SocketHandle in
            guard engineOnLoop != nil else { throw shutDownError }  // stopped: its loop is ending
            let socket = try DatagramSocket(fd: fd, controller: self, user: make())
            return handle(bound, closing: socket) { socket.close() }
        } orClose: { Glibc.close(fd) }
    }

    /// Records `close` with the engine (run when the controller stops) and wraps it in a handle.
    /// Loop thread only.
    private func handle(_ address: SocketAddress, closing object: AnyObject, _ close: @escaping () -> Void) -> SocketHandle {
        let key = ObjectIdentifier(object)
        engineOnLoop?.sockets[key] = close
        let closer: () -> Void = { [weak self] in
            self?.engineOnLoop?.sockets[key] = nil
            close()
        }
        return SocketHandle(address: address, closer: LoopBound(closer, loop: loop))
    }

    /// Runs `body` on the loop (inline when already there) and returns its result; when it
    /// throws, or the loop has stopped, runs `cleanup` (the descriptor is nobody's yet) and refuses.
    private func onLoop<T: Sendable>(
        _ body: @escaping @Sendable () throws(ControllerError) -> T, orClose cleanup: () -> Void
    ) throws(ControllerError) -> T {
        let result: Result<T, ControllerError>
        if loop.inEventLoop {
            result = Result { () throws(ControllerError) -> T in try body() }
        } else {
            do {
                result = try loop.runAndWait { Result { () throws(ControllerError) -> T in try body() } }
            } catch {
                result = .failure(shutDownError)
            }
        }
        if case .failure = result { cleanup() }
        return try result.get()
    }
}
