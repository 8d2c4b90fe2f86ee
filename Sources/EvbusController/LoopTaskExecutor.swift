import EvbusIO

/// Runs Swift concurrency jobs on an EvbusIO event loop thread, so async handlers execute on their
/// controller's own thread (between I/O and other work of that loop), never concurrently with it.
final class LoopTaskExecutor: TaskExecutor {
    let loop: EventLoop

    init(loop: EventLoop) { self.loop = loop }

    func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        loop.execute { [self] in unowned.runSynchronously(on: asUnownedTaskExecutor()) }
    }
}
