import CEvbusLinux
import Glibc

/// Credentials the kernel vouches for on a Unix socket (SO_PEERCRED): who is on the other end.
public struct PeerCredentials: Hashable, Sendable, CustomStringConvertible {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32
    /// Its supplementary groups (`SO_PEERGROUPS`).
    public var groups: [UInt32] = []
    public var description: String { "pid=\(pid) uid=\(uid) gid=\(gid)" }
}

/// Unix channel socket system calls. Every fd returned is non-blocking and close-on-exec.
public enum UnixSocket {
    /// The longest path a `sockaddr_un` holds (108 bytes including the NUL).
    public static let maxPathBytes = 107

    /// Why a socket path cannot be used.
    public struct PathError: Error, CustomStringConvertible {
        public var description: String
    }

    static func withAddress<R>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) throws -> R {
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty else { throw PathError(description: "the socket path is empty") }
        guard bytes.count <= maxPathBytes else {
            throw PathError(description: "socket path '\(path)' is \(bytes.count) bytes; Unix sockets allow at most \(maxPathBytes)")
        }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }

    static func newSocket() throws(IOError) -> Int32 {
        try syscallNoWait("socket") {
            socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | CEvbus_SOCK_NONBLOCK | CEvbus_SOCK_CLOEXEC, 0)
        }
    }

    /// Binds and listens on `path` (which must not exist), then applies `mode` and `group` to the
    /// file, before listening: nobody connects while it still has the wrong owner or mode.
    public static func listen(path: String, mode: UInt32, group: UInt32? = nil, backlog: Int32 = 1024) throws -> Int32 {
        let fd = try newSocket()
        do {
            let r = try withAddress(path) { addr, len in bind(fd, addr, len) }
            if r != 0 { throw IOError("bind(\(path))", errno: errno) }
            if let group, chown(path, uid_t.max, gid_t(group)) != 0 { throw IOError("chown(\(path), group \(group))", errno: errno) }
            if chmod(path, mode_t(mode)) != 0 { throw IOError("chmod(\(path))", errno: errno) }
            if Glibc.listen(fd, backlog) != 0 { throw IOError("listen(\(path))", errno: errno) }
            return fd
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    /// Connects to the socket at `path`. A Unix connect completes at once or fails; the returned fd is
    /// non-blocking. `EAGAIN` (the listener's backlog is full) is retried briefly.
    public static func connect(path: String) throws -> Int32 {
        let fd = try newSocket()
        do {
            var attempts = 0
            while true {
                let r = try withAddress(path) { addr, len in Glibc.connect(fd, addr, len) }
                if r == 0 { return fd }
                let e = errno
                if e == EINTR { continue }
                if e == EAGAIN && attempts < 200 {
                    attempts += 1
                    usleep(5_000)
                    continue
                }
                throw IOError("connect(\(path))", errno: e)
            }
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    /// Accepts one pending connection, or nil when none is waiting.
    public static func accept(_ listener: Int32) throws(IOError) -> Int32? {
        try syscall("accept4") { CEvbus_accept4(listener, nil, nil, CEvbus_SOCK_NONBLOCK | CEvbus_SOCK_CLOEXEC) }
    }

    /// The kernel-checked identity of the process at the other end.
    public static func peerCredentials(_ fd: Int32) throws(IOError) -> PeerCredentials {
        var cred = CEvbus_ucred()
        try syscallNoWait("getsockopt(SO_PEERCRED)") { CEvbus_peercred(fd, &cred) }
        return PeerCredentials(pid: cred.pid, uid: cred.uid, gid: cred.gid, groups: peerGroups(fd))
    }

    /// The peer's supplementary groups; none if the kernel will not say.
    static func peerGroups(_ fd: Int32) -> [UInt32] {
        var capacity = 64
        while capacity <= 65_536 {
            var groups = [gid_t](repeating: 0, count: capacity)
            let n = CEvbus_peergroups(fd, &groups, Int32(capacity))
            if n >= 0 { return Array(groups.prefix(Int(n))) }
            guard errno == ERANGE else { return [] }
            capacity *= 4
        }
        return []
    }

    /// A connected pair, for tests and in-process links.
    public static func pair() throws(IOError) -> (Int32, Int32) {
        var fds: [Int32] = [0, 0]
        try syscallNoWait("socketpair") {
            socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | CEvbus_SOCK_NONBLOCK | CEvbus_SOCK_CLOEXEC, 0, &fds)
        }
        return (fds[0], fds[1])
    }

    /// True if something accepts connections at `path` right now (used to refuse starting a second
    /// broker over a live one, and to recognise a stale socket file).
    public static func isLive(path: String) -> Bool {
        guard let fd = try? connect(path: path) else { return false }
        Glibc.close(fd)
        return true
    }
}
