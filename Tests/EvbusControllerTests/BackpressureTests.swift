import EvbusController
import Foundation
import Synchronization
import Testing

/// A plain thread that outpaces its controller is paused once `4,096` items wait for the loop;
/// Swift tasks never are. Handlers are made slow (a 20 µs busy wait) so a producer always outruns
/// them, whatever else the machine is doing.
@Suite struct BackpressureTests {
    final class Counts: Sendable {
        let handled = Atomic<Int>(0)
        let widestGap = Atomic<Int>(0)
        let order = Mutex<(last: Int, inOrder: Bool)>((-1, true))

        /// Records how far the dispatcher has got ahead of the handler.
        func dispatched(_ n: Int) {
            let gap = n + 1 - handled.load(ordering: .relaxed)
            var seen = widestGap.load(ordering: .relaxed)
            while gap > seen {
                let (done, now) = widestGap.compareExchange(expected: seen, desired: gap, ordering: .relaxed)
                if done { break }
                seen = now
            }
        }
    }

    static func slowController(_ counts: Counts) throws -> Controller {
        let c = try Controller(name: "slow")
        try c.on("item") { s in
            let start = ContinuousClock.now
            while ContinuousClock.now - start < .microseconds(20) {}
            let n = s.payload(as: Int.self)!
            counts.order.withLock { if n != $0.last + 1 { $0.inOrder = false }; $0.last = n }
            counts.handled.add(1, ordering: .relaxed)
            return nil
        }
        return c
    }

    @Test func aPlainThreadIsPausedWhileFourThousandItemsWait() async throws {
        let counts = Counts()
        let c = try Self.slowController(counts)
        defer { c.shutdown() }
        let total = 12_000
        let last = try await onPlainThread { () -> Pending<DispatchResult> in
            for n in 0..<total - 1 {
                c.dispatch("item", n)
                counts.dispatched(n)
            }
            return c.dispatch("item", total - 1)
        }
        _ = try await last.value
        #expect(counts.handled.load(ordering: .relaxed) == total)
        #expect(counts.order.withLock { $0.inOrder })
        // At most one batch being run plus a full inbox (and the item in hand) were ever outstanding.
        #expect(counts.widestGap.load(ordering: .relaxed) <= 2 * 4096 + 2)
    }

    @Test func swiftTasksAreNeverPaused() async throws {
        let counts = Counts()
        let c = try Self.slowController(counts)
        defer { c.shutdown() }
        let total = 12_000
        var last: Pending<DispatchResult>?
        for n in 0..<total {
            last = c.dispatch("item", n)
            counts.dispatched(n)
        }
        _ = try await last!.value
        #expect(counts.handled.load(ordering: .relaxed) == total)
        #expect(counts.order.withLock { $0.inOrder })
        // 12,000 dispatches take milliseconds and the handlers 240 ms: unpaused, the task got far ahead.
        #expect(counts.widestGap.load(ordering: .relaxed) > 2 * 4096 + 2)
    }
}
