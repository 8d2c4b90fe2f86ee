import EvbusWire

/// Everything on a peer connection waiting for the broker to answer, in one table: requests by
/// request id (a caller's continuation, or a reply the loop handles itself, as a multi-pattern
/// subscribe does) and PINGs by token. Loop-bound. Taking a waiter out and resuming it are
/// separate steps, so no access to the table is open while a waiter runs.
struct PendingReplies {
    enum Waiter {
        case caller(CheckedContinuation<Frame, any Error>)
        case onLoop((Result<Frame, any Error>) -> Void)

        func resume(with result: Result<Frame, any Error>) {
            switch self {
            case .caller(let c): c.resume(with: result)
            case .onLoop(let body): body(result)
            }
        }
    }

    private var requests: [UInt32: Waiter] = [:]
    private var pings: [UInt64: CheckedContinuation<Void, any Error>] = [:]
    private var nextPing: UInt64 = 1

    mutating func expect(_ id: UInt32, _ waiter: Waiter) { requests[id] = waiter }

    func isWaiting(for id: UInt32) -> Bool { requests[id] != nil }

    mutating func take(_ id: UInt32) -> Waiter? { requests.removeValue(forKey: id) }

    /// Registers a PING's waiter; returns the token to send.
    mutating func expectPong(_ waiter: CheckedContinuation<Void, any Error>) -> UInt64 {
        let token = nextPing
        nextPing += 1
        pings[token] = waiter
        return token
    }

    mutating func takePong(_ token: UInt64) -> CheckedContinuation<Void, any Error>? { pings.removeValue(forKey: token) }

    /// Empties the table (the connection ended), returning what waited so it can be failed.
    mutating func takeAll() -> (requests: [Waiter], pings: [CheckedContinuation<Void, any Error>]) {
        defer {
            requests.removeAll()
            pings.removeAll()
        }
        return (Array(requests.values), Array(pings.values))
    }
}
