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

    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rank < b.rank }
}

/// One line per event to stderr (or a sink tests provide). Messages are built only when the level is on.
public struct Logger: Sendable {
    public var level: LogLevel
    public var label: String
    private let sink: (@Sendable (String) -> Void)?

    public init(label: String, level: LogLevel = .info, sink: (@Sendable (String) -> Void)? = nil) {
        self.label = label
        self.level = level
        self.sink = sink
    }

    public func log(_ messageLevel: LogLevel, _ message: @autoclosure () -> String) {
        guard messageLevel <= level else { return }
        let line = "\(Self.timestamp()) \(messageLevel.rawValue.uppercased()) \(label): \(message())"
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
