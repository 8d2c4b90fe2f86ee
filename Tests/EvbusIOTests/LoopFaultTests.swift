import EvbusIO
import Foundation
import Synchronization
import Testing

/// The loop under faults: a peer hanging up while paused, work that keeps queueing work, and work
/// handed to a loop that has stopped. Each case once spun, starved or hung; each is checked by
/// state or CPU time, never by how fast anything ran.
@Suite struct LoopFaultTests {
    /// Runs `body` on another thread and waits up to `seconds` for it; false if it is still blocked
    /// (the thread is then left behind, so a regression fails instead of hanging the suite).
    static func finishes(within seconds: Double = 10, _ body: @escaping @Sendable () -> Void) -> Bool {
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            body()
            done.signal()
        }
        return done.wait(timeout: .now() + seconds) == .success
    }

    /// A channel on `loop` with reading paused, the other end of its socket pair, and its recorder.
    static func pausedChannel(on loop: EventLoop) throws -> (channel: LoopBound<Channel>, peer: Int32, recorder: Recorder) {
        let (a, b) = try UnixSocket.pair()
        let recorder = Recorder()
        let channel = try loop.runAndWait {
            let c = try Channel(fd: a, loop: loop)
            c.delegate = recorder
            c.pauseReading()
            return LoopBound(c, loop: loop)
        }
        return (channel, b, recorder)
    }

    @Test func aPausedChannelWhosePeerHangsUpIsClosedAndTheLoopSleeps() throws {
        let loop = try EventLoop.startThread(name: "hup-test")
        defer { loop.stopAndJoin() }
        let (channel, b, recorder) = try Self.pausedChannel(on: loop)
        // Input the broker never read (it is paused), then the other side dies.
        writeAll(b, [UInt8](repeating: 7, count: 4096))
        close(b)
        #expect(blockUntil { recorder.closeReason != nil }, "a hang-up while paused must close the channel")
        #expect(recorder.closeReason == .endOfFile)
        #expect(recorder.received.isEmpty, "unread input of a peer that hung up while paused is discarded")
        #expect(try loop.runAndWait { channel.value.isClosed && loop.registrationCount == 0 })
        // Nothing left to report: the loop sleeps instead of waking for the hang-up again and again.
        let before = try loop.runAndWait { EventLoopTests.threadCPUNanos() }
        usleep(300_000)
        let after = try loop.runAndWait { EventLoopTests.threadCPUNanos() }
        #expect(after - before < 50_000_000, "the loop used \((after - before) / 1_000_000) ms of CPU in 300 ms while idle")
    }

    @Test func bytesSentWhilePausedAreReadOnResumeBeforeTheEndOfFile() throws {
        // Only a hang-up *while paused* discards input: paused and resumed before the peer goes,
        // every byte is read, then the end of file closes the channel.
        let loop = try EventLoop.startThread(name: "hup-test")
        defer { loop.stopAndJoin() }
        let (channel, b, recorder) = try Self.pausedChannel(on: loop)
        writeAll(b, Array(0..<100))
        usleep(20_000)  // the bytes wait in the socket while the channel is paused
        try loop.runAndWait { channel.value.resumeReading() }
        #expect(blockUntil { recorder.received.count == 100 })
        close(b)
        #expect(blockUntil { recorder.closeReason == .endOfFile })
    }

    @Test func aTaskThatRequeuesItselfDoesNotStarveTimersOrSockets() throws {
        let loop = try EventLoop.startThread(name: "starve-test")
        defer { loop.stopAndJoin() }
        let (a, b) = try UnixSocket.pair()
        defer { close(b) }
        let recorder = Recorder()
        let timerFired = Atomic<Bool>(false)
        final class Spinner: Sendable {
            let loop: EventLoop
            let stop: Atomic<Bool>
            let runs: Atomic<Int>
            init(loop: EventLoop) {
                self.loop = loop
                stop = Atomic(false)
                runs = Atomic(0)
            }
            func spin() {
                runs.add(1, ordering: .relaxed)
                if !stop.load(ordering: .relaxed) { try? loop.execute { self.spin() } }
            }
        }
        let spinner = Spinner(loop: loop)
        let channel = try loop.runAndWait {
            let c = try Channel(fd: a, loop: loop)
            c.delegate = recorder
            loop.scheduleTimer(afterNanos: 10_000_000) { timerFired.store(true, ordering: .relaxed) }
            spinner.spin()  // from the loop thread: re-queues itself on the loop-local path
            return LoopBound(c, loop: loop)
        }
        writeAll(b, [1, 2, 3])
        let progressed = blockUntil(10) { timerFired.load(ordering: .relaxed) && recorder.received.count == 3 }
        spinner.stop.store(true, ordering: .relaxed)
        #expect(progressed, "a 10 ms timer and a socket read must run while a task keeps re-queueing itself")
        #expect(spinner.runs.load(ordering: .relaxed) > 1)
        try loop.runAndWait { channel.value.close() }
    }

    @Test func workHandedToAStoppedLoopIsRefusedAndNobodyWaits() throws {
        let loop = try EventLoop.startThread(name: "stopped-test")
        loop.stopAndJoin()
        #expect(loop.isStopped)
        #expect(throws: EventLoopError.stopped) { try loop.execute {} }
        let refused = Mutex<(any Error)?>(nil)
        #expect(Self.finishes {
            do { _ = try loop.runAndWait { 1 } } catch { refused.withLock { $0 = error } }
        }, "runAndWait on a stopped loop must return")
        #expect(refused.withLock { $0 as? EventLoopError } == .stopped)
        #expect(Self.finishes { loop.stopAndJoin() }, "a second stopAndJoin must return")
    }

    @Test func workQueuedBeforeTheStopStillRuns() throws {
        let loop = try EventLoop.startThread(name: "stopping-test")
        let gate = DispatchSemaphore(value: 0)
        let ran = Atomic<Int>(0)
        // The loop is held inside a task; the stop and 100 more tasks queue up behind it.
        try loop.execute { gate.wait() }
        loop.stop()
        for _ in 0..<100 { try? loop.execute { ran.add(1, ordering: .relaxed) } }
        gate.signal()
        #expect(Self.finishes { loop.stopAndJoin() })
        #expect(ran.load(ordering: .relaxed) == 100, "work accepted before the stop is run, not dropped")
    }

    final class Executor: TaskExecutor {
        let loop: EventLoop
        init(_ loop: EventLoop) { self.loop = loop }
        func enqueue(_ job: consuming ExecutorJob) { loop.enqueue(UnownedJob(job), on: self) }
    }

    @Test func aTaskPreferringAStoppedLoopStillFinishes() async throws {
        let loop = try EventLoop.startThread(name: "job-test")
        let executor = Executor(loop)
        let onLoop = await withTaskExecutorPreference(executor) { loop.inEventLoop }
        #expect(onLoop)
        loop.stopAndJoin()
        let finished = Atomic<Bool>(false)
        let task = Task(executorPreference: executor) {
            await Task.yield()
            finished.store(true, ordering: .releasing)
        }
        #expect(blockUntil(10) { finished.load(ordering: .acquiring) }, "a job enqueued on a stopped loop must still run")
        if finished.load(ordering: .acquiring) { await task.value }
    }
}
