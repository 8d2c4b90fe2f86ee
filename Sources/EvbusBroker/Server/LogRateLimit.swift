/// Keeps a misbehaving client from flooding the log with refusals: per kind of refusal and uid,
/// the first `burst` lines in a window of `windowNanos` are written, the rest only counted; when
/// the window ends, one line says how many were left out. Loop thread only.
struct LogRateLimit {
    /// Events limited this way: what a client can cause over and over.
    static let limitedEvents: Set<String> = ["access-refused", "quota-refused", "request-refused", "protocol-error"]

    let burst: Int
    let windowNanos: UInt64
    private var windows: [Key: Window] = [:]

    struct Key: Hashable {
        var event: String
        var uid: String
    }

    struct Window {
        var startedAt: UInt64
        var written = 0
        var suppressed = 0
    }

    init(burst: Int = 10, windowNanos: UInt64 = 10_000_000_000) {
        self.burst = burst
        self.windowNanos = windowNanos
    }

    /// Whether to write this line now.
    mutating func admit(event: String, uid: String, now: UInt64) -> Bool {
        guard Self.limitedEvents.contains(event) else { return true }
        let key = Key(event: event, uid: uid)
        var w = windows[key] ?? Window(startedAt: now)
        defer { windows[key] = w }
        if w.written < burst {
            w.written += 1
            return true
        }
        w.suppressed += 1
        return false
    }

    /// Windows that have ended, with how many lines each left out (only those that left any
    /// out); they start afresh.
    mutating func expired(now: UInt64) -> [(event: String, uid: String, suppressed: Int)] {
        var out: [(String, String, Int)] = []
        for (key, w) in windows where now &- w.startedAt >= windowNanos {
            if w.suppressed > 0 { out.append((key.event, key.uid, w.suppressed)) }
            windows[key] = nil
        }
        return out.sorted { ($0.0, $0.1) < ($1.0, $1.1) }
    }
}
