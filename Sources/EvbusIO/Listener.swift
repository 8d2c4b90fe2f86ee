import CEvbusLinux
import Glibc

/// A listening Unix socket on a loop; hands each accepted fd (non-blocking) to `onAccept`.
/// Loop-bound.
public final class Listener: Selectable {
    public let fd: Int32
    public let path: String
    public unowned let loop: EventLoop
    private var registration: EventLoop.Registration?
    private let onAccept: (Int32) -> Void
    private let onError: (IOError) -> Void

    /// Listens on `path` with file mode `mode`, owned by `group` if given. Loop thread only.
    public init(
        path: String, mode: UInt32, group: UInt32? = nil, loop: EventLoop,
        onAccept: @escaping (Int32) -> Void, onError: @escaping (IOError) -> Void
    ) throws {
        self.path = path
        self.loop = loop
        self.onAccept = onAccept
        self.onError = onError
        fd = try UnixSocket.listen(path: path, mode: mode, group: group)
        do {
            registration = try loop.register(fd, events: CEvbus_EPOLLIN, handler: self)
        } catch {
            Glibc.close(fd)
            unlink(path)
            throw error
        }
    }

    public func ready(_ events: UInt32) {
        while registration != nil {
            do {
                guard let client = try UnixSocket.accept(fd) else { return }
                onAccept(client)
            } catch {
                onError(error)
                if error.errno == EMFILE || error.errno == ENFILE {
                    // Out of descriptors: stop accepting for a moment instead of spinning on the event.
                    pause(forNanos: 100_000_000)
                }
                return
            }
        }
    }

    private func pause(forNanos nanos: UInt64) {
        guard let registration else { return }
        try? loop.modify(fd, registration, events: 0)
        loop.scheduleTimer(afterNanos: nanos) { [weak self] in
            guard let self, let registration = self.registration else { return }
            try? self.loop.modify(self.fd, registration, events: CEvbus_EPOLLIN)
        }
    }

    /// Stops listening and removes the socket file.
    public func close() {
        guard let registration else { return }
        loop.deregister(fd, registration)
        self.registration = nil
        Glibc.close(fd)
        unlink(path)
    }
}
