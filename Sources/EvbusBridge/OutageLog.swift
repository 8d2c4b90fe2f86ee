/// NATS unreachable, the client tries again every couple of seconds: a line per attempt would
/// bury everything else in the log within an hour. An outage's failed attempts are logged at
/// the 1st, 2nd, 4th, 8th, … (each line says which), as is a server's -ERR refusing a login at
/// those attempts; once connected, the count starts again and every -ERR is logged.
struct OutageLog: Sendable {
    /// Failed attempts since the client was last connected.
    private(set) var failures = 0
    var connected = false

    /// One more failed attempt: its number if it is to be logged.
    mutating func failed() -> Int? {
        failures += 1
        return Self.logged(failures) ? failures : nil
    }

    mutating func connectedNow() {
        failures = 0
        connected = true
    }

    /// Whether a server's -ERR is logged: always while connected; during an outage only when
    /// the attempt it belongs to (the one under way) is logged.
    var logsError: Bool { connected || Self.logged(failures + 1) }
    /// The attempt under way (nil while connected).
    var currentAttempt: Int? { connected ? nil : failures + 1 }

    static func logged(_ attempt: Int) -> Bool { attempt > 0 && attempt & (attempt - 1) == 0 }
}
