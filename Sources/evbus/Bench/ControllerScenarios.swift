import EvbusController
import EvbusIO
import Foundation
import Synchronization

/// Controller scenarios: no broker involved.
enum ControllerScenarios {
    final class Counter: Sendable {
        let count = Atomic<Int>(0)
        let waits = Mutex<[UInt64]>([])
    }

    /// One thread dispatches `count` events as fast as it can to one controller with one plain handler.
    static func throughput(count: Int) async throws -> String {
        let c = try Controller(name: "bench-ctl")
        let counter = Counter()
        try c.on("tick") { _ in
            counter.count.add(1, ordering: .relaxed)
            return nil
        }
        let start = monotonicNanos()
        // Handlers run in dispatch order, so the last dispatch's result means all are handled.
        // (Awaiting it, rather than polling a counter, keeps a third thread off the two cores.)
        let controllerCPUBefore = try await c.submit { _ in threadCPUNanos() }.value
        let (last, dispatcherCPU) = try await onThread { () -> (Pending<DispatchResult>, UInt64) in
            let before = threadCPUNanos()
            for i in 0..<count - 1 { c.dispatch("tick", i) }
            let last = c.dispatch("tick", count - 1)
            return (last, threadCPUNanos() - before)
        }
        _ = try await last.value
        let nanos = monotonicNanos() - start
        // CPU time per event on each side: steadier than the rate on a shared machine, since time
        // the threads spent descheduled is not in it.
        let controllerCPU = try await c.submit { _ in threadCPUNanos() }.value - controllerCPUBefore
        c.shutdown()
        await c.stopped()
        return "dispatch         events/s \(BenchReport.human(BenchReport.rate(count, nanos: nanos)).padding(toLength: 9, withPad: " ", startingAt: 0)) "
            + "dispatched \(count) handled \(counter.count.load(ordering: .relaxed)) (one dispatching thread, one plain handler)"
            + "  CPU per event: controller \(controllerCPU / UInt64(count)) ns, dispatcher \(dispatcherCPU / UInt64(count)) ns"
    }

    /// Cross-thread dispatch-to-start latency: another thread dispatches one event every 20 µs; the
    /// handler records how long each waited (`session.queuedFor`).
    static func latency(count: Int) async throws -> String {
        let c = try Controller(name: "bench-ctl")
        let counter = Counter()
        try c.on("ping") { s in
            let waited = s.queuedFor.components
            counter.waits.withLock { $0.append(UInt64(waited.seconds) * 1_000_000_000 + UInt64(waited.attoseconds / 1_000_000_000)) }
            counter.count.add(1, ordering: .relaxed)
            return nil
        }
        try await onThread {
            var next = monotonicNanos()
            for _ in 0..<count {
                next += 20_000
                while monotonicNanos() < next {}
                c.dispatch("ping")
            }
        }
        while counter.count.load(ordering: .relaxed) < count { try await Task.sleep(nanoseconds: 100_000) }
        c.shutdown()
        await c.stopped()
        let sorted = counter.waits.withLock { $0.sorted() }
        return "dispatch-latency events \(count)  dispatch-to-start p50 \(BenchReport.micros(BenchReport.percentile(sorted, 50)))"
            + " p99 \(BenchReport.micros(BenchReport.percentile(sorted, 99))) p99.9 \(BenchReport.micros(BenchReport.percentile(sorted, 99.9)))"
    }

    /// CPU time the calling thread has used.
    static func threadCPUNanos() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
        return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
    }

    /// Runs blocking code on a plain thread (a dispatching producer is usually not a Swift task).
    static func onThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async throws -> T {
        await withCheckedContinuation { (c: CheckedContinuation<T, Never>) in
            Thread.detachNewThread {
                c.resume(returning: body())
            }
        }
    }
}
