import EvbusBroker
import EvbusIO
import Foundation

/// What `evbus broker` tells systemd, and takes from it (docs/OPERATIONS.md): the listening
/// socket of socket activation, `READY=1` once it accepts connections, `WATCHDOG=1` at half
/// `WATCHDOG_USEC` from the broker's own loop, `STOPPING=1` when it begins to stop. Outside
/// systemd (no such variables) every step does nothing.
struct ServiceManager {
    let listenFD: Int32?
    private let notifier: Systemd.Notifier?
    private let watchdog: Duration?
    private let log: Logger

    init(log: Logger) {
        self.log = log
        let environment = ProcessInfo.processInfo.environment
        let fds = Systemd.listenFDs(environment)
        listenFD = fds.first
        if fds.count > 1 { log.warning("socket activation passed \(fds.count) sockets; serving the first (descriptor \(fds[0]))") }
        notifier = Systemd.Notifier(environment)
        watchdog = Systemd.watchdogInterval(environment)
        // Not for the processes the broker starts (none today), as sd_listen_fds(3) advises.
        for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] { unsetenv(name) }
    }

    func started(_ broker: Broker) {
        guard let notifier else { return }
        notifier.send("READY=1\nSTATUS=accepting connections on \(broker.socketPath)\nMAINPID=\(getpid())")
        log.debug("told the service manager at \(notifier.address): READY=1")
        if let watchdog {
            broker.every(watchdog) { notifier.send("WATCHDOG=1") }
            log.debug("watchdog: WATCHDOG=1 every \(watchdog)")
        }
    }

    func stopping() {
        notifier?.send("STOPPING=1\nSTATUS=shutting down")
    }
}
