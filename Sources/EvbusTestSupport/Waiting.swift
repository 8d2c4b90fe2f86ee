public import Evbus
import Synchronization

/// Takes `n` elements from a subscription or consumer, failing (not hanging) if they do not come.
public func take<S: AsyncSequence & Sendable>(_ n: Int, from sequence: S, seconds: Double = 20) async throws -> [S.Element]
where S.Element: Sendable {
    try await withThrowingTaskGroup(of: [S.Element]?.self) { group in
        group.addTask {
            var out: [S.Element] = []
            for try await e in sequence {
                out.append(e)
                if out.count == n { break }
            }
            return out
        }
        group.addTask {
            try await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
            return nil
        }
        let first = try await group.next()!
        group.cancelAll()
        guard let elements = first else { throw TestSupportError("timed out waiting for \(n) elements") }
        return elements
    }
}

/// The `EvbusError` a call fails with (nil if it succeeded or failed otherwise).
public func callError(_ body: () async throws -> Void) async -> EvbusError? {
    do {
        try await body()
        return nil
    } catch let error as EvbusError {
        return error
    } catch {
        return nil
    }
}

/// The broker's wire code for a refused call (nil if it succeeded or failed otherwise).
public func refusalCode(_ body: () async throws -> Void) async -> ErrorCode? {
    await callError(body)?.wireCode
}

/// How `task` ended, or nil if it had not within `seconds`: a call that must end by itself (at a
/// timeout, or on cancellation) is checked without the test hanging when it does not.
public func outcome<T: Sendable>(of task: Task<T, any Error>, within seconds: Double = 20) async -> Result<T, any Error>? {
    let ended = Atomic<Bool>(false)
    let watcher = Task {
        let result = await task.result
        ended.store(true, ordering: .releasing)
        return result
    }
    guard await eventually(seconds, { ended.load(ordering: .acquiring) }) else { return nil }
    return await watcher.value
}
