import Dispatch
import EvbusBroker
import EvbusIO
import Glibc
import Synchronization

/// `evbus broker`: runs the broker in the foreground until SIGINT or SIGTERM.
struct BrokerCommand: EvbusCommand {
    static let spec = CommandSpec(
        name: "broker",
        abstract: "Run the broker in the foreground (logs to stderr; stop with Ctrl-C or SIGTERM).",
        discussion: """
            Settings come from --config (JSON; see Configs/broker.json and docs/CONFIG.md), then the
            flags below. With neither, every setting has its default.
            """,
        options: [
            CommandSpec.socketOption,
            .init(long: "config", short: "c", valueName: "file", help: "A JSON config file."),
            .init(long: "log-level", short: nil, valueName: "level", help: "error, warning, info (default) or debug."),
            .init(long: "data-dir", short: nil, valueName: "dir", help: "Where durable queues live (default $XDG_STATE_HOME/evbus, else ~/.local/state/evbus)."),
        ])

    var socket: String?
    var configFile: String?
    var logLevel: LogLevel?
    var dataDir: String?

    init(_ a: ParsedArguments) throws(UsageError) {
        socket = a.value("socket")
        configFile = a.value("config")
        dataDir = a.value("data-dir")
        if dataDir == "" { throw UsageError("The value '' is invalid for '--data-dir <dir>': give a directory") }
        if let raw = a.value("log-level") {
            guard let level = LogLevel(rawValue: raw) else {
                throw UsageError("The value '\(raw)' is invalid for '--log-level <level>': expected error, warning, info or debug")
            }
            logLevel = level
        }
    }

    func run() async throws -> Int32 {
        var config = BrokerConfig()
        if let configFile {
            do {
                config = try BrokerConfig.load(file: configFile)
            } catch {
                Terminal.err("Error: \(error)\n")
                return ExitCode.config
            }
        }
        if let socket { config.socketPath = socket }
        if let logLevel { config.logLevel = logLevel }
        if let dataDir { config.dataDir = dataDir }
        if config.dataDir == nil { config.dataDir = Self.defaultDataDir() }
        let log = Logger(label: "evbus-broker", level: config.logLevel)

        raiseOpenFileLimit(log: log)
        // Signals arrive on a dispatch queue; the handler only wakes the waiting task. A second
        // one ends the process at once, whatever the graceful stop is still waiting for.
        let signals = TerminationSignals { name in
            log.warning("\(name) received again: exiting at once, without waiting for clients")
            _exit(ExitCode.failure)
        }
        let systemd = ServiceManager(log: log)
        let broker: Broker
        do {
            broker = try Broker.start(config: config, log: log, listenFD: systemd.listenFD)
        } catch {
            Terminal.err("Error: cannot start the broker: \(error)\n")
            return ExitCode.failure
        }
        systemd.started(broker)
        let reload = ReloadSignal { [configFile, config] in
            guard let configFile else {
                log.warning("SIGHUP: there is no --config file to reread; nothing changed")
                return
            }
            do {
                var reread = try BrokerConfig.load(file: configFile)
                reread.socketPath = config.socketPath
                reread.logLevel = config.logLevel
                reread.dataDir = config.dataDir
                let cancelled = try broker.reload(reread)
                log.info("SIGHUP: reread \(configFile): \(reread.access.map { "\($0.count) access rules" } ?? "no access rules"), \(reread.quotas.count) quotas; \(cancelled) subscriptions and consumers cancelled")
            } catch {
                log.error("SIGHUP: reload refused, the rules in force are unchanged: \(error)")
            }
        }
        let signalName = await signals.wait()
        withExtendedLifetime(reload) {}
        log.info("\(signalName) received: shutting down")
        systemd.stopping()
        await broker.shutdown(graceNanos: UInt64(config.shutdownGraceMillis) * 1_000_000)
        log.info("stopped")
        return ExitCode.success
    }
}

extension BrokerCommand {
    /// `$XDG_STATE_HOME/evbus`, else `~/.local/state/evbus` (the XDG base directory rule for state
    /// that should survive a restart), else a per-user directory under /tmp.
    static func defaultDataDir() -> String {
        if let state = getenv("XDG_STATE_HOME").map({ String(cString: $0) }), state.hasPrefix("/") {
            return state + "/evbus"
        }
        if let home = getenv("HOME").map({ String(cString: $0) }), !home.isEmpty {
            return home + "/.local/state/evbus"
        }
        return "/tmp/evbus-state-\(getuid())"
    }
}

/// Every connection is a file descriptor: lift the soft limit (often 1024) to the hard limit.
func raiseOpenFileLimit(log: Logger) {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
    limit.rlim_cur = limit.rlim_max
    if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
        log.debug("open file limit raised to \(limit.rlim_max)")
    }
}

/// SIGINT and SIGTERM, caught from the moment this is made (make it before the broker starts:
/// a signal sent as soon as the socket exists must not be lost in between), handed to `wait`.
final class TerminationSignals {
    private let waiter = SignalWaiter()
    private let sources: [any DispatchSourceSignal]

    /// - Parameter onRepeat: runs (on the signal queue) for each signal after the first: the
    ///   broker exits at once on a second one instead of finishing its graceful stop.
    init(onRepeat: (@Sendable (String) -> Void)? = nil) {
        // The default action would kill the process: the sources take them instead.
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        signal(SIGHUP, SIG_IGN)  // until `ReloadSignal` takes it: a reload request never kills the broker
        let queue = DispatchQueue(label: "evbus.signals")
        var sources: [any DispatchSourceSignal] = []
        for (number, name) in [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM")] {
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { @Sendable [waiter] in
                if !waiter.fire(name) { onRepeat?(name) }
            }
            source.resume()
            sources.append(source)
        }
        self.sources = sources
    }

    /// Ends the wait as a signal would when fired with another reason (from any thread).
    var trigger: SignalWaiter { waiter }

    /// Suspends until the first of them arrives (or returns at once if it has); its name.
    func wait() async -> String {
        let name = await waiter.wait()
        withExtendedLifetime(sources) {}
        return name
    }
}

/// SIGHUP: reread the config (its access rules and quotas). Each signal runs `reload` on a
/// queue of its own, one at a time.
final class ReloadSignal {
    private let source: any DispatchSourceSignal

    /// Runs `reload` for each `number` signal (SIGHUP by default; the bridge takes SIGUSR1).
    init(signal number: Int32 = SIGHUP, _ reload: @escaping @Sendable () -> Void) {
        signal(number, SIG_IGN)
        source = DispatchSource.makeSignalSource(signal: number, queue: DispatchQueue(label: "evbus.reload"))
        source.setEventHandler(handler: reload)
        source.resume()
    }

    deinit { source.cancel() }
}

/// Hands the first signal to whoever waits (before or after it arrives).
final class SignalWaiter: Sendable {
    private let state = Mutex<(fired: String?, waiter: CheckedContinuation<String, Never>?)>((nil, nil))

    /// The wait has ended (or would end at once).
    var hasFired: Bool { state.withLock { $0.fired != nil } }

    /// Ends the wait with `name`; false if it had already ended (this is a repeat).
    @discardableResult
    func fire(_ name: String) -> Bool {
        let (first, waiter) = state.withLock { s -> (Bool, CheckedContinuation<String, Never>?) in
            guard s.fired == nil else { return (false, nil) }
            s.fired = name
            defer { s.waiter = nil }
            return (true, s.waiter)
        }
        waiter?.resume(returning: name)
        return first
    }

    func wait() async -> String {
        await withCheckedContinuation { c in
            let fired = state.withLock { s -> String? in
                if s.fired == nil { s.waiter = c }
                return s.fired
            }
            if let fired { c.resume(returning: fired) }
        }
    }
}
