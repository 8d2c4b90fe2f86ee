import CEvbusLinux
import EvbusIO
import Glibc

/// A listening TCP or Unix socket on a controller's loop: each accepted connection gets a new
/// protocol from the factory. Loop-bound.
final class StreamListener: Selectable {
    let fd: Int32
    let address: SocketAddress
    private let controller: Controller
    private let factory: @Sendable () -> any StreamProtocol
    private var registration: EventLoop.Registration?

    init(fd: Int32, address: SocketAddress, controller: Controller, factory: @escaping @Sendable () -> any StreamProtocol) throws(ControllerError) {
        self.fd = fd
        self.address = address
        self.controller = controller
        self.factory = factory
        do {
            registration = try controller.loop.register(fd, events: CEvbus_EPOLLIN, handler: self)
        } catch {
            throw ControllerError(.socketFailed, error.description)
        }
    }

    func ready(_ events: UInt32) {
        while registration != nil {
            let client = CEvbus_accept4(fd, nil, nil, CEvbus_SOCK_NONBLOCK | CEvbus_SOCK_CLOEXEC)
            if client < 0 {
                // EAGAIN: accepted all; anything else (EMFILE, a client that reset first): try on
                // the next readiness rather than spin.
                return
            }
            try? StreamDelegate.start(fd: client, controller: controller, user: factory())
        }
    }

    func close() {
        guard let registration else { return }
        controller.loop.deregister(fd, registration)
        self.registration = nil
        Glibc.close(fd)
        if case .unix(let path) = address { unlink(path) }
    }
}

/// A connection being set up: waits for the socket to become writable (a TCP connect in
/// progress), then hands it to the protocol, or fails the caller's Pending: at once when the
/// kernel refuses, or at `timeout` when nothing answers (a host that drops SYNs, a listener
/// whose backlog is full: the kernel alone would retry for minutes). Loop-bound.
final class StreamConnector: Selectable {
    private let fd: Int32
    private let address: SocketAddress
    private let controller: Controller
    private let user: any StreamProtocol
    private let done: Pending<Void>
    private let timeout: Duration?
    private var registration: EventLoop.Registration?
    private var timer: TimerID?

    init(fd: Int32, address: SocketAddress, controller: Controller, user: any StreamProtocol, done: Pending<Void>, timeout: Duration?) {
        self.fd = fd
        self.address = address
        self.controller = controller
        self.user = user
        self.done = done
        self.timeout = timeout
    }

    /// Starts the connect; finishes at once when the kernel does.
    func start() {
        let r: Int32
        do {
            r = try address.withSockaddr { Glibc.connect(fd, $0, $1) }
        } catch {
            return fail(error)
        }
        if r == 0 { return connected() }
        let code = errno
        guard code == EINPROGRESS || code == EINTR else { return fail(SocketCalls.failure("connect", address, code)) }
        do {
            registration = try controller.loop.register(fd, events: CEvbus_EPOLLOUT, handler: self)
        } catch {
            return fail(ControllerError(.socketFailed, error.description))
        }
        guard let timeout else { return }
        timer = controller.loop.scheduleTimer(afterNanos: timeout.wholeNanoseconds) { [self] in
            timer = nil
            guard let registration else { return }
            controller.loop.deregister(fd, registration)
            self.registration = nil
            fail(ControllerError(.timedOut, "connect to \(address): no answer within \(timeout)"))
        }
    }

    func ready(_ events: UInt32) {
        guard let registration else { return }
        controller.loop.deregister(fd, registration)
        self.registration = nil
        if let timer { controller.loop.cancelTimer(timer) }
        timer = nil
        var code: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &length)
        if code != 0 { return fail(SocketCalls.failure("connect", address, code)) }
        connected()
    }

    private func connected() {
        do {
            try StreamDelegate.start(fd: fd, controller: controller, user: user)
            done.resolve(.success(()))
        } catch {
            done.resolve(.failure(error))
        }
    }

    private func fail(_ error: ControllerError) {
        Glibc.close(fd)
        done.resolve(.failure(error))
    }
}
