import Glibc

/// Log levels, most severe first.
public enum LogLevel: String, Sendable, CaseIterable, Comparable, Codable {
    case error, warning, info, debug

    var rank: Int {
        switch self {
        case .error: 0
        case .warning: 1
        case .info: 2
        case .debug: 3
        }
    }

    /// The syslog priority journald reads from a `<N>` line prefix (sd-daemon(3)).
    var syslogPriority: Int {
        switch self {
        case .error: 3
        case .warning: 4
        case .info: 6
        case .debug: 7
        }
    }

    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rank < b.rank }
}

/// One line per event, in `key=value` form (logfmt), to stderr or a sink tests provide:
///
///     ts=2026-12-03T11:48:00.123Z level=warning conn=12 uid=1000 pid=4242 name=thermostat event=closed reason=slow-consumer msg="disconnected as a slow consumer (1048576 bytes queued)"
///
/// Keys come in a stable order (the time, the level, then the caller's fields, then `msg`); a
/// value with a space, `=` or `"` is quoted, with `\"`, `\\` and `\n` escaped. When stderr is the
/// journal (`JOURNAL_STREAM` names it), each line starts with the priority journald reads
/// (`<4>` for a warning) instead of a timestamp, which journald adds itself. Messages are built
/// only when the level is on.
public struct Logger: Sendable {
    public var level: LogLevel
    public var label: String
    private let sink: (@Sendable (String) -> Void)?
    /// Lines go to the journal: priority prefixes, no timestamps.
    public let toJournal: Bool

    public init(label: String, level: LogLevel = .info, sink: (@Sendable (String) -> Void)? = nil, toJournal: Bool? = nil) {
        self.label = label
        self.level = level
        self.sink = sink
        self.toJournal = toJournal ?? (sink == nil && Self.stderrIsTheJournal())
    }

    /// A plain message (no fields of its own).
    public func log(_ messageLevel: LogLevel, _ message: @autoclosure () -> String) {
        log(messageLevel, fields: [], message())
    }

    /// One event: `fields` (e.g. `[("conn", "12"), ("event", "closed")]`) then `msg`.
    public func log(_ messageLevel: LogLevel, fields: @autoclosure () -> [(String, String)], _ message: @autoclosure () -> String) {
        guard messageLevel <= level else { return }
        var line = toJournal ? "<\(messageLevel.syslogPriority)>" : "ts=\(Self.timestamp()) "
        line += "level=\(messageLevel.rawValue)"
        for (key, value) in fields() { line += " \(key)=\(Self.quoted(value))" }
        line += " msg=\(Self.quoted(message()))"
        write(line)
    }

    /// An event whose caller wrote its own fields as logfmt (`event=started name=a reason="…"`,
    /// values made with `quoted`): they follow the time and level as they are, with no `msg`.
    public func log(_ messageLevel: LogLevel, logfmt fields: @autoclosure () -> String) {
        guard messageLevel <= level else { return }
        write((toJournal ? "<\(messageLevel.syslogPriority)>" : "ts=\(Self.timestamp()) ") + "level=\(messageLevel.rawValue) " + fields())
    }

    private func write(_ line: String) {
        if let sink {
            sink(line)
        } else {
            var bytes = Array((line + "\n").utf8)
            bytes.withUnsafeMutableBytes { _ = Glibc.write(STDERR_FILENO, $0.baseAddress, $0.count) }
        }
    }

    public func error(_ m: @autoclosure () -> String) { log(.error, m()) }
    public func warning(_ m: @autoclosure () -> String) { log(.warning, m()) }
    public func info(_ m: @autoclosure () -> String) { log(.info, m()) }
    public func debug(_ m: @autoclosure () -> String) { log(.debug, m()) }

    /// A value as logfmt writes it: bare when it can be, else quoted and escaped.
    public static func quoted(_ value: String) -> String {
        let bare = !value.isEmpty && value.utf8.allSatisfy { $0 > 0x20 && $0 != UInt8(ascii: "=") && $0 != UInt8(ascii: "\"") && $0 != 0x7F }
        if bare { return value }
        var out = "\""
        for c in value.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default: out.unicodeScalars.append(c)
            }
        }
        return out + "\""
    }

    /// True when `JOURNAL_STREAM` (`device:inode`) names this process's stderr, as systemd sets
    /// it for a service whose output goes to the journal (systemd.exec(5)).
    static func stderrIsTheJournal() -> Bool {
        guard let raw = getenv("JOURNAL_STREAM") else { return false }
        let parts = String(cString: raw).split(separator: ":")
        var st = stat()
        guard parts.count == 2, let dev = UInt64(parts[0]), let ino = UInt64(parts[1]), fstat(STDERR_FILENO, &st) == 0 else { return false }
        return UInt64(st.st_dev) == dev && UInt64(st.st_ino) == ino
    }

    /// UTC wall-clock time, ISO 8601 with milliseconds.
    static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = tm()
        var seconds = ts.tv_sec
        gmtime_r(&seconds, &t)
        func pad(_ v: Int32, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(pad(t.tm_year + 1900, 4))-\(pad(t.tm_mon + 1, 2))-\(pad(t.tm_mday, 2))T"
            + "\(pad(t.tm_hour, 2)):\(pad(t.tm_min, 2)):\(pad(t.tm_sec, 2)).\(pad(Int32(ts.tv_nsec / 1_000_000), 3))Z"
    }
}
