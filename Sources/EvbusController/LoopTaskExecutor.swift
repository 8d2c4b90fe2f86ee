package import EvbusIO

/// Runs Swift concurrency jobs on an EvbusIO event loop thread, so async handlers execute on their
/// controller's own thread (between I/O and other work of that loop), never concurrently with it.
package final class LoopTaskExecutor: TaskExecutor {
    package let loop: EventLoop

    package init(loop: EventLoop) { self.loop = loop }

    package func enqueue(_ job: consuming ExecutorJob) {
        loop.enqueue(UnownedJob(job), on: self)
    }
}
