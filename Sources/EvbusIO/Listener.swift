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
    /// The socket file is this listener's to remove (false for one handed over by systemd,
    /// which owns the file and keeps it for the next start).
    private let ownsPath: Bool

    /// Listens on `path` with file mode `mode`, owned by `group` if given. Loop thread only.
    public init(
        path: String, mode: UInt32, group: UInt32? = nil, loop: EventLoop,
        onAccept: @escaping (Int32) -> Void, onError: @escaping (IOError) -> Void
    ) throws {
        self.path = path
        self.loop = loop
        self.onAccept = onAccept
        self.onError = onError
        ownsPath = true
        fd = try UnixSocket.listen(path: path, mode: mode, group: group)
        do {
            registration = try loop.register(fd, events: CEvbus_EPOLLIN, handler: self)
        } catch {
            Glibc.close(fd)
            unlink(path)
            throw error
        }
    }

    /// Accepts on a listening socket someone else made (socket activation); `path` names it in
    /// logs. It is made non-blocking; `close` closes it but leaves its file alone. Loop thread only.
    public init(
        adopting fd: Int32, path: String, loop: EventLoop,
        onAccept: @escaping (Int32) -> Void, onError: @escaping (IOError) -> Void
    ) throws(IOError) {
        self.path = path
        self.loop = loop
        self.onAccept = onAccept
        self.onError = onError
        ownsPath = false
        self.fd = fd
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        registration = try loop.register(fd, events: CEvbus_EPOLLIN, handler: self)
    }

    /// The path a listening Unix socket is bound to, if it is one.
    public static func boundPath(_ fd: Int32) -> String? {
        var addr = sockaddr_un()
        var length = socklen_t(MemoryLayout<sockaddr_un>.size)
        let r = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        guard r == 0, addr.sun_family == sa_family_t(AF_UNIX) else { return nil }
        let bytes = withUnsafeBytes(of: &addr.sun_path) { Array($0.prefix(Int(length) - MemoryLayout<sa_family_t>.size)).prefix { $0 != 0 } }
        return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self)
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
        if ownsPath { unlink(path) }
    }
}
