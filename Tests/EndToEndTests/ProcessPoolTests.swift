import Evbus
import EvbusTestSupport
import Foundation
import Testing

/// Worker processes behind a `ProcessPool`, with `evbus-test-peer` as the workers' program.
@Suite struct ProcessPoolTests {
    struct Shape: Codable, Sendable, Equatable {
        var name: String
        var corners: [Int]
        var note: String?
    }

    func pool(_ workers: Int = 2) throws -> ProcessPool {
        try ProcessPool(name: "test", workers: workers, executable: TestPaths.testPeerBinary)
    }

    func code<T>(_ pending: Pending<T>) async -> (ControllerError.Code, String)? {
        do {
            _ = try await pending.value
            return nil
        } catch let e as ControllerError {
            return (e.code, e.message)
        } catch {
            return nil
        }
    }

    func alive(_ pid: Int32) -> Bool { kill(pid, 0) == 0 }

    @Test func typedWorkAndResultsCrossTheProcessBoundary() async throws {
        let pool = try pool()
        #expect(try await pool.dispatch("fib", 20, as: Int.self).value == 6765)
        let triangle = Shape(name: "triangle", corners: [1, 2, 3], note: "")
        #expect(try await pool.dispatch("describe", triangle, as: String.self).value == "triangle with 3 corners")
        #expect(try await pool.dispatch("grow", triangle, as: Shape.self).value == Shape(name: "triangle+", corners: [1, 2, 3, 0], note: nil))
        let pids = pool.workerPIDs
        #expect(pids.count == 2 && !pids.contains(getpid()))
        let ran = try await pool.dispatch("pid", 0, as: Int.self).value
        #expect(pids.contains(Int32(ran)))
        pool.shutdown()
        await pool.stopped()
    }

    @Test func workGoesToAnIdleWorkerAndACrashedOneFailsItsWorkAndIsReplaced() async throws {
        let pool = try pool()
        let stuck = pool.dispatch("hang", 0, as: Int.self)
        // Every later piece goes to the other worker, the only idle one.
        var seen: Set<Int> = []
        for _ in 0..<5 { seen.insert(try await pool.dispatch("pid", 0, as: Int.self).value) }
        #expect(seen.count == 1)
        let busy = try #require(pool.workerPIDs.first { !seen.contains(Int($0)) })
        kill(busy, SIGKILL)
        let failure = await code(stuck)
        #expect(failure?.0 == .workerCrashed)
        #expect(failure?.1.contains("pid \(busy)") == true && failure?.1.contains("killed by signal 9") == true && failure?.1.contains("'hang'") == true)
        #expect(await eventually { pool.workerPIDs.count == 2 && !pool.workerPIDs.contains(busy) })
        #expect(pool.restarts == 1)
        #expect(!alive(busy))
        #expect(try await pool.dispatch("fib", 10, as: Int.self).value == 55)
        pool.shutdown()
        await pool.stopped()
    }

    @Test func aWorkerThatExitsFailsItsWorkWithItsStatus() async throws {
        let pool = try pool(1)
        let failure = await code(pool.dispatch("crash", Int32(3), as: Int.self))
        #expect(failure?.0 == .workerCrashed && failure?.1.contains("exited with status 3") == true)
        #expect(try await pool.dispatch("fib", 12, as: Int.self).value == 144)  // the replacement serves
        pool.shutdown()
        await pool.stopped()
    }

    @Test func handlerErrorsUnknownEventsAndWrongTypesAreRefusedClearly() async throws {
        let pool = try pool(1)
        let failed = await code(pool.dispatch("fail", "nope", as: Int.self))
        #expect(failed?.0 == .workerFailed && failed?.1.contains("refused: nope") == true)
        let unknown = await code(pool.dispatch("no-such-work", 1, as: Int.self))
        #expect(unknown?.0 == .workerFailed && unknown?.1.contains("no worker handler for 'no-such-work'") == true)
        await #expect(throws: DecodingError.self) { try await pool.dispatch("describe", Shape(name: "x", corners: []), as: Int.self).value }
        let badInput = await code(pool.dispatch("fib", "twenty", as: Int.self))  // the worker cannot decode it
        #expect(badInput?.0 == .workerFailed)
        #expect(pool.restarts == 0)  // none of this cost a worker
        #expect(try await pool.dispatch("fib", 15, as: Int.self).value == 610)
        pool.shutdown()
        await pool.stopped()
    }

    @Test func shutdownFinishesQueuedWorkThenStopsEveryWorker() async throws {
        let pool = try pool()
        let pids = pool.workerPIDs
        let results = (20..<26).map { pool.dispatch("fib", $0, as: Int.self) }
        pool.shutdown()
        var values: [Int] = []
        for r in results { values.append(try await r.value) }
        #expect(values == [6765, 10946, 17711, 28657, 46368, 75025])
        await pool.stopped()
        for pid in pids { #expect(!alive(pid)) }
        #expect(await code(pool.dispatch("fib", 1, as: Int.self))?.0 == .shutDown)
    }

    /// Work dispatched to a pool nobody holds any more: it still runs, then the workers go.
    func dispatchAndDrop() throws -> (pids: [Int32], results: [Pending<Int>]) {
        let pool = try pool()
        return (pool.workerPIDs, (20..<24).map { pool.dispatch("fib", $0, as: Int.self) })
    }

    @Test func aPoolDroppedWithoutShutdownFinishesItsWorkThenStopsItsWorkers() async throws {
        let (pids, results) = try dispatchAndDrop()
        #expect(pids.count == 2 && pids.allSatisfy(alive))
        var values: [Int] = []
        for r in results { values.append(try await r.value) }
        #expect(values == [6765, 10946, 17711, 28657])
        #expect(await eventually { !pids.contains(where: alive) }, "workers \(pids) still running")
    }

    /// A worker program that exits before it is ready is started again once a second, not in a
    /// loop; after three such starts in a row the waiting work fails, saying why, rather than
    /// waiting for ever, and so does new work while no worker has come up.
    @Test func aWorkerProgramThatCannotStartIsRetriedSlowlyAndItsWorkFails() async throws {
        let pool = try ProcessPool(name: "broken", workers: 1, executable: "/bin/false")
        let start = ContinuousClock.now
        let work = pool.dispatch("fib", 1, as: Int.self)
        let failure = await code(work)
        #expect(failure?.0 == .workerCrashed, "\(String(describing: failure))")
        #expect(failure?.1.hasPrefix("no worker of the process pool 'broken' could start (3 tries in a row; the last: worker 0 (pid ") == true, "\(String(describing: failure))")
        #expect(failure?.1.hasSuffix("exited with status 1 before it was ready)") == true, "\(String(describing: failure))")
        // Once a second, counted against the time that really passed (a stalled machine
        // oversleeps): a retry loop would make thousands.
        let restarts = pool.restarts, seconds = Int((ContinuousClock.now - start).components.seconds)
        #expect(restarts >= 3 && restarts <= seconds + 2, "\(restarts) restarts in \(seconds) s")
        #expect(await code(pool.dispatch("fib", 2, as: Int.self))?.0 == .workerCrashed)  // at once
        pool.shutdown()
        await pool.stopped()
    }

    @Test func aProgramCanStartAPoolOfItself() async throws {
        let demo = try RunningProcess(TestPaths.testPeerBinary, ["pool-demo", "2", "10", "20", "25"])
        demo.closeStdin()
        #expect(await demo.waitForExit(seconds: 60) == 0, "\(demo.stderr)")
        #expect(demo.stdout == "fib(10) = 55\nfib(20) = 6765\nfib(25) = 75025\n")
    }

    /// docs/CONTROLLER.md, "Worker processes"
    @Test func theDocsPoolExample() async throws {
        let pool = try ProcessPool(name: "fib", workers: 2, executable: TestPaths.testPeerBinary)
        async let a = pool.dispatch("fib", 25, as: Int.self).value
        async let b = pool.dispatch("fib", 26, as: Int.self).value
        #expect(try await a + b == 75025 + 121393)
        pool.shutdown()
        await pool.stopped()
    }
}
