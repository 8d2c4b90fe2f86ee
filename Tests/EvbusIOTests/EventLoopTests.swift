@testable import EvbusIO
import EvbusTestSupport
import Foundation
import Synchronization
import Testing

@Suite struct EventLoopTests {
    /// CPU time the calling thread has used.
    static func threadCPUNanos() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
        return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
    }

    @Test func idleSpinIsClampedToZeroThroughOneSecond() throws {
        let loop = try EventLoop()
        loop.idleSpin = .seconds(-1)
        #expect(loop.idleSpin == .zero)
        loop.idleSpin = .seconds(5)
        #expect(loop.idleSpin == .seconds(1))
        loop.idleSpin = .microseconds(50)
        #expect(loop.idleSpin == .microseconds(50))
    }

    @Test func aPollingLoopStillRunsTasksAndTimersAndSleepsWhenWorkStops() throws {
        let loop = try EventLoop.startThread(name: "spin-test")
        defer { loop.stopAndJoin() }
        loop.idleSpin = .microseconds(500)
        #expect(loop.idleSpin == .microseconds(500))
        // Work arriving back to back: the loop polls between items, and still runs every one.
        var sum = 0
        for i in 1...300 { sum += try loop.runAndWait { i } }
        #expect(sum == 300 * 301 / 2)
        let timerFired = DispatchSemaphore(value: 0)
        try loop.runAndWait { _ = loop.scheduleTimer(afterNanos: 1_000_000) { timerFired.signal() } }
        #expect(timerFired.wait(timeout: .now() + 20) == .success)
        // Then nothing for half a second: a loop that kept polling would burn most of it.
        let before = try loop.runAndWait { Self.threadCPUNanos() }
        usleep(500_000)
        let after = try loop.runAndWait { Self.threadCPUNanos() }
        #expect(after - before < 100_000_000)
    }

    @Test func tasksFromManyThreadsAllRunOnTheLoopInPerThreadOrder() async throws {
        let loop = try EventLoop.startThread(name: "loop-test")
        defer { loop.stopAndJoin() }
        final class Log: Sendable {
            let seen = Mutex<[Int: [Int]]>([:])
            let offLoop = Atomic<Int>(0)
        }
        let log = Log()
        await withTaskGroup(of: Void.self) { group in
            for t in 0..<8 {
                group.addTask {
                    for i in 0..<2000 {
                        try! loop.execute {
                            if !loop.inEventLoop { log.offLoop.add(1, ordering: .relaxed) }
                            log.seen.withLock { $0[t, default: []].append(i) }
                        }
                    }
                }
            }
        }
        #expect(blockUntil { log.seen.withLock { $0.values.reduce(0) { $0 + $1.count } } == 16_000 })
        #expect(log.offLoop.load(ordering: .relaxed) == 0)
        for (_, order) in log.seen.withLock({ $0 }) { #expect(order == Array(0..<2000)) }
    }

    @Test func timersFireInDeadlineOrderAndCanBeCancelled() throws {
        let loop = try EventLoop.startThread(name: "timer-test")
        defer { loop.stopAndJoin() }
        let fired = Mutex<[String]>([])
        try loop.runAndWait {
            loop.scheduleTimer(afterNanos: 30_000_000) { fired.withLock { $0.append("c") } }
            loop.scheduleTimer(afterNanos: 10_000_000) { fired.withLock { $0.append("a") } }
            loop.scheduleTimer(afterNanos: 20_000_000) { fired.withLock { $0.append("b") } }
            let cancelled = loop.scheduleTimer(afterNanos: 15_000_000) { fired.withLock { $0.append("x") } }
            loop.cancelTimer(cancelled)
        }
        #expect(blockUntil { fired.withLock { $0.count } == 3 })
        usleep(50_000)
        #expect(fired.withLock { $0 } == ["a", "b", "c"])
    }

    @Test func aDurationMeantAsNeverIsAFarDeadlineNotAnOverflow() throws {
        #expect(Duration.milliseconds(1500).wholeNanoseconds == 1_500_000_000)
        #expect(Duration.seconds(-1).wholeNanoseconds == 0)
        #expect(Duration.seconds(Int64.max).wholeNanoseconds == UInt64(Int64.max / 2))
        // Now plus the longest delay still lies ahead: that timer waits, a near one fires.
        let loop = try EventLoop.startThread(name: "timer-test")
        defer { loop.stopAndJoin() }
        let fired = Mutex<[String]>([])
        try loop.runAndWait {
            loop.scheduleTimer(afterNanos: Duration.seconds(Int64.max).wholeNanoseconds) { fired.withLock { $0.append("never") } }
            loop.scheduleTimer(afterNanos: 10_000_000) { fired.withLock { $0.append("soon") } }
        }
        #expect(blockUntil { fired.withLock { $0.count } == 1 })
        usleep(30_000)
        #expect(fired.withLock { $0 } == ["soon"])
    }

    @Test func cancelledTimersDoNotPileUpAndTheLiveOnesStillFireInOrder() throws {
        let loop = try EventLoop.startThread(name: "timer-test")
        defer { loop.stopAndJoin() }
        let fired = Mutex<[Int]>([])
        let size = try loop.runAndWait {
            // A live timer ahead of them all keeps cancelled ones from surfacing at the top...
            loop.scheduleTimer(afterNanos: 1_000_000) { fired.withLock { $0.append(0) } }
            // ...while timeouts are answered long before their deadline, as a busy requester's are.
            for _ in 0..<100_000 {
                loop.cancelTimer(loop.scheduleTimer(afterNanos: 30_000_000_000) {})
            }
            for i in (1...5).reversed() {
                loop.scheduleTimer(afterNanos: UInt64(i) * 5_000_000) { fired.withLock { $0.append(i) } }
            }
            return loop.timers.heap.count
        }
        #expect(size < 200, "\(size) heap entries for 6 live timers")
        #expect(blockUntil { fired.withLock { $0.count } == 6 })
        #expect(fired.withLock { $0 } == [0, 1, 2, 3, 4, 5])
    }

    @Test func repeatingTimerRunsUntilCancelledAndCanBeRetimed() throws {
        let loop = try EventLoop.startThread(name: "timer-test")
        defer { loop.stopAndJoin() }
        let count = Atomic<Int>(0)
        let id = try loop.runAndWait {
            loop.scheduleTimer(afterNanos: 1_000_000, everyNanos: 1_000_000) { count.add(1, ordering: .relaxed) }
        }
        #expect(blockUntil { count.load(ordering: .relaxed) >= 3 })
        try loop.runAndWait { loop.retime(id, everyNanos: 2_000_000) }
        let before = count.load(ordering: .relaxed)
        #expect(blockUntil { count.load(ordering: .relaxed) >= before + 2 })
        try loop.runAndWait { loop.cancelTimer(id) }
        let stopped = count.load(ordering: .relaxed)
        usleep(30_000)
        #expect(count.load(ordering: .relaxed) == stopped)
    }
}

@Suite struct WriteQueueTests {
    @Test func consumeAcrossChunksKeepsTheRemainderInOrder() {
        var q = WriteQueue()
        let big = (0..<(WriteQueue.chunkSize + 10)).map { UInt8(truncatingIfNeeded: $0) }
        q.append([1, 2, 3])
        q.append(big)  // does not fit the first chunk's remainder: a second chunk
        let total = q.count
        #expect(total == big.count + 3)
        q.consume(5)
        let afterConsume = q.count
        #expect(afterConsume == big.count - 2)
        var rest = WriteQueue()
        rest.append(contentsOf: q)
        let moved = rest.count
        #expect(moved == big.count - 2)
        rest.consume(rest.count)
        let empty = rest.isEmpty
        #expect(empty)
    }
}

@Suite struct ListenerTests {
    @Test func acceptsConnectionsAndRemovesItsSocketFileOnClose() throws {
        let path = TestPaths.socket("listen")
        let loop = try EventLoop.startThread(name: "listen-test")
        defer { loop.stopAndJoin() }
        let accepted = Atomic<Int>(0)
        let listener = try loop.runAndWait {
            LoopBound(try Listener(path: path, mode: 0o600, loop: loop, onAccept: { fd in
                accepted.add(1, ordering: .relaxed)
                close(fd)
            }, onError: { _ in }), loop: loop)
        }
        var info = stat()
        #expect(stat(path, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600)
        let fds = try (0..<3).map { _ in try UnixSocket.connect(path: path) }
        #expect(blockUntil { accepted.load(ordering: .relaxed) == 3 })
        fds.forEach { close($0) }
        try loop.runAndWait { listener.value.close() }
        #expect(access(path, F_OK) != 0)
        #expect(!UnixSocket.isLive(path: path))
    }

    @Test func tooLongSocketPathIsRefusedWithTheReason() {
        let path = "/tmp/" + String(repeating: "x", count: 120)
        #expect(throws: UnixSocket.PathError.self) { try UnixSocket.connect(path: path) }
    }
}
