import EvbusWire

/// Everything on a peer connection waiting for the broker to answer, in one table: requests by
/// request id (each with the handler that takes the answer on the loop) and PINGs by token.
/// Loop-bound. Taking an entry out and running it are separate steps, so no access to the table
/// is open while a handler runs.
struct PendingReplies {
    typealias Handler = (Result<Frame, any Error>) -> Void

    private var requests: [UInt32: Handler] = [:]
    private var pings: [UInt64: ControlWaiter<Void>] = [:]
    private var nextPing: UInt64 = 1

    mutating func expect(_ id: UInt32, _ handler: @escaping Handler) { requests[id] = handler }

    func isWaiting(for id: UInt32) -> Bool { requests[id] != nil }

    mutating func take(_ id: UInt32) -> Handler? { requests.removeValue(forKey: id) }

    /// Registers a PING's waiter; returns the token to send.
    mutating func expectPong(_ waiter: ControlWaiter<Void>) -> UInt64 {
        let token = nextPing
        nextPing += 1
        pings[token] = waiter
        return token
    }

    mutating func takePong(_ token: UInt64) -> ControlWaiter<Void>? { pings.removeValue(forKey: token) }

    /// Empties the table (the connection ended), returning what waited so it can be failed.
    mutating func takeAll() -> (requests: [Handler], pings: [ControlWaiter<Void>]) {
        defer {
            requests.removeAll()
            pings.removeAll()
        }
        return (Array(requests.values), Array(pings.values))
    }
}
