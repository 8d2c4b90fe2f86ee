import Evbus
import Glibc
import Synchronization

/// `evbus top`: the broker's activity, refreshed every second. On a terminal it redraws in place
/// (on the alternate screen, which it leaves on exit) and quits on `q` or Ctrl-C, restoring the
/// terminal; otherwise it prints one plain snapshot per interval.
struct TopCommand: EvbusCommand {
    static let spec = CommandSpec(
        name: "top",
        abstract: "Watch the broker live: rates per queue and per connection, depths, slow consumers first.",
        discussion: """
            On a terminal: redraws every --interval in place; q or Ctrl-C quits. When standard output is
            not a terminal (a pipe, a file): prints a snapshot per interval, separated by blank lines.
            """,
        options: [
            CommandSpec.socketOption,
            .init(long: "interval", short: "i", valueName: "ms", help: "Refresh period in milliseconds (default 1000, at least 100)."),
            .init(long: "count", short: "n", valueName: "n", help: "Stop after <n> refreshes."),
        ])

    var socket: String?
    var intervalMillis: Int
    var count: Int?

    init(_ a: ParsedArguments) throws(UsageError) {
        socket = a.value("socket")
        intervalMillis = try a.int("interval", in: 100...3_600_000, spec: Self.spec) ?? 1000
        count = try a.int("count", in: 1...Int.max, spec: Self.spec)
    }

    func run() async throws -> Int32 {
        let peer = try await Peer.connect(to: socket, name: "evbus top")
        let screen = isatty(STDOUT_FILENO) == 1 ? LiveScreen() : nil
        let quit = TerminationSignals()
        if let screen { screen.start(onQuit: quit.trigger) }
        defer { screen?.restore() }
        var previous: [StatEntry]?
        var shown = 0
        while true {
            let entries = try await peer.brokerStats()
            let topology = try await peer.topology()
            let connections = try await peer.connections()
            let text = TopView.render(
                entries: entries, previous: previous, intervalMillis: intervalMillis, queues: topology.queues, connections: connections,
                width: screen?.columns)
            previous = entries
            if let screen { screen.draw(text) } else { Terminal.out((shown > 0 ? "\n" : "") + text) }
            shown += 1
            if let count, shown >= count { break }
            // Sleep one interval in short steps, so q or a signal ends it within 50 ms.
            var slept = 0
            while slept < intervalMillis && !quit.trigger.hasFired {
                try? await Task.sleep(for: .milliseconds(min(50, intervalMillis - slept)))
                slept += 50
            }
            if quit.trigger.hasFired { break }
        }
        screen?.restore()
        await peer.close()
        return ExitCode.success
    }
}

/// The text of one refresh.
enum TopView {
    static func render(
        entries: [StatEntry], previous: [StatEntry]?, intervalMillis: Int, queues: [QueueSummary], connections: [ConnectionSummary],
        width: Int?
    ) -> String {
        func value(_ name: String, _ list: [StatEntry]?) -> UInt64? { list?.first { $0.name == name }?.value }
        func rate(_ name: String) -> String {
            guard let now = value(name, entries), let before = value(name, previous) else { return "-" }
            return "\((now &- before) * 1000 / UInt64(max(intervalMillis, 1)))"
        }
        var out = "evbus top  connections \(value("connections", entries) ?? 0)  published/s \(rate("published"))"
        out += "  delivered/s \(rate("delivered"))  queued/s \(rate("queued"))  acked/s \(rate("acked"))"
        out += "  dropped \(value("dropped", entries) ?? 0)  slow-consumer disconnects \(value("slow_consumer_disconnects", entries) ?? 0)\n\n"
        var rows = [["QUEUE", "READY", "UNACKED", "CONSUMERS", "PUB/S", "DELIVER/S", "ACK/S"]]
        for q in queues.sorted(by: { ($0.ready, $0.unacked, $1.name) > ($1.ready, $1.unacked, $0.name) }) {
            rows.append([q.name, "\(q.ready)", "\(q.unacked)", "\(q.consumers)", "\(q.publishRate)", "\(q.deliverRate)", "\(q.ackRate)"])
        }
        out += (queues.isEmpty ? "(no queues)\n" : StatsCommand.table(rows)) + "\n"
        out += ConnectionsFormat.table(connections)
        guard let width else { return out }
        // On a terminal, long lines are cut rather than wrapped, so the layout stays in place.
        return out.split(separator: "\n", omittingEmptySubsequences: false).map { String($0.prefix(width)) }.joined(separator: "\n")
    }
}

/// The terminal while `top` runs: the alternate screen, no cursor, keys read one at a time
/// without echo. Everything is put back by `restore`, on q, on Ctrl-C, on SIGTERM and on errors.
final class LiveScreen: Sendable {
    private let saved = Mutex<termios?>(nil)
    private let restored = Atomic<Bool>(false)

    var columns: Int {
        var size = winsize()
        return ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0 && size.ws_col > 0 ? Int(size.ws_col) : 80
    }

    /// Enters the alternate screen and reads keys on a thread of its own: `q` fires `onQuit`.
    func start(onQuit: SignalWaiter) {
        if isatty(STDIN_FILENO) == 1 {
            var t = termios()
            if tcgetattr(STDIN_FILENO, &t) == 0 {
                saved.withLock { $0 = t }
                var raw = t
                raw.c_lflag &= ~tcflag_t(ICANON | ECHO)  // ISIG stays: Ctrl-C is still SIGINT
                tcsetattr(STDIN_FILENO, TCSANOW, &raw)
            }
        }
        Terminal.out("\u{1B}[?1049h\u{1B}[?25l")
        let thread = KeyReader(onQuit: onQuit)
        thread.start()
    }

    func draw(_ text: String) {
        Terminal.out("\u{1B}[H\u{1B}[2J" + text.split(separator: "\n", omittingEmptySubsequences: false).joined(separator: "\r\n"))
    }

    func restore() {
        guard !restored.exchange(true, ordering: .acquiringAndReleasing) else { return }
        if var t = saved.withLock({ $0 }) { tcsetattr(STDIN_FILENO, TCSANOW, &t) }
        Terminal.out("\u{1B}[?25h\u{1B}[?1049l")
    }
}

/// Reads standard input a byte at a time on a plain thread; `q`, `Q` or end of input quits.
final class KeyReader: Sendable {
    let onQuit: SignalWaiter

    init(onQuit: SignalWaiter) { self.onQuit = onQuit }

    func start() {
        var thread = pthread_t()
        let box = Unmanaged.passRetained(self)
        pthread_create(&thread, nil, { raw in
            let reader = Unmanaged<KeyReader>.fromOpaque(raw!).takeRetainedValue()
            reader.loop()
            return nil
        }, box.toOpaque())
        pthread_detach(thread)
    }

    private func loop() {
        var byte: UInt8 = 0
        while true {
            let n = read(STDIN_FILENO, &byte, 1)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 || byte == UInt8(ascii: "q") || byte == UInt8(ascii: "Q") {
                onQuit.fire(n <= 0 ? "end of input" : "q")
                return
            }
        }
    }
}
