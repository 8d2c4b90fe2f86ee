import Foundation

// The one way tests wait for something that has no event to wait on: poll a condition until it
// holds or a generous deadline passes (tests never assert on speed, only on "eventually").
// Async code suspends between polls; synchronous tests (which must not suspend) block instead.

/// Polls `condition` until it holds or `seconds` pass; suspends between polls.
public func eventually(_ seconds: Double = 20, _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try await condition() { return true }
        try? await Task.sleep(nanoseconds: 2_000_000)
    }
    return try await condition()
}

/// `eventually` for synchronous tests: blocks the calling thread between polls.
public func blockUntil(_ seconds: Double = 20, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(2_000)
    }
    return condition()
}

/// Runs `body`, failing (and cancelling it) if it has not finished within `seconds`: for examples
/// that iterate a subscription and must not hang the suite if nothing arrives.
public func withDeadline<T: Sendable>(_ seconds: Double = 20, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
            return nil
        }
        let first = try await group.next()!
        group.cancelAll()
        guard let value = first else { throw TestSupportError("did not finish within \(seconds) s") }
        return value
    }
}
