import Glibc

/// The two systemd protocols a service speaks, without libsystemd: socket activation (the
/// listening socket arrives as descriptor 3, announced by `LISTEN_PID`/`LISTEN_FDS`) and
/// readiness notification (datagrams such as `READY=1` to the Unix socket named by
/// `NOTIFY_SOCKET`, `@` meaning the abstract namespace). See sd_listen_fds(3) and sd_notify(3).
public enum Systemd {
    /// The first passed descriptor (`SD_LISTEN_FDS_START`).
    public static let firstListenFD: Int32 = 3

    /// The listening sockets passed to this process, if `LISTEN_PID` names it; each is made
    /// close-on-exec. Empty when the variables are absent or meant for another process.
    public static func listenFDs(_ environment: [String: String], pid: Int32? = nil) -> [Int32] {
        let pid = pid ?? getpid()
        guard let pidText = environment["LISTEN_PID"], Int32(pidText) == pid,
              let countText = environment["LISTEN_FDS"], let count = Int32(countText), count > 0, count < 1024 else { return [] }
        let fds = (0..<count).map { firstListenFD + $0 }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        return fds
    }

    /// How often to send `WATCHDOG=1`: half the `WATCHDOG_USEC` systemd set for this process
    /// (sd_watchdog_enabled(3)), nil when no watchdog is asked for.
    public static func watchdogInterval(_ environment: [String: String], pid: Int32? = nil) -> Duration? {
        let pid = pid ?? getpid()
        guard let text = environment["WATCHDOG_USEC"], let usec = UInt64(text), usec > 0 else { return nil }
        if let owner = environment["WATCHDOG_PID"], Int32(owner) != pid { return nil }
        return .microseconds(Int64(usec / 2))
    }

    /// Sends state lines to `NOTIFY_SOCKET`. Sending never blocks and never fails the broker:
    /// a supervisor that is not listening only misses a notification.
    public struct Notifier: Sendable {
        public let address: String
        private let fd: Int32

        /// Nil when `NOTIFY_SOCKET` is unset, empty, or not a usable Unix socket address.
        public init?(_ environment: [String: String]) {
            guard let address = environment["NOTIFY_SOCKET"], address.hasPrefix("/") || address.hasPrefix("@"),
                  address.utf8.count < 108 else { return nil }
            let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { return nil }
            self.address = address
            self.fd = fd
        }

        /// Sends `state` (e.g. `READY=1`, `STOPPING=1`, `WATCHDOG=1`, `STATUS=...`); true if sent.
        @discardableResult
        public func send(_ state: String) -> Bool {
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            var path = Array(address.utf8)
            if path.first == UInt8(ascii: "@") { path[0] = 0 }  // abstract namespace
            withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: path) }
            let length = socklen_t(MemoryLayout<sa_family_t>.size + path.count)
            let bytes = Array(state.utf8)
            let sent = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { a in
                    // Never waits: a supervisor that stopped reading must not stall the broker's loop.
                    bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT), a, length) }
                }
            }
            return sent == bytes.count
        }
    }
}
