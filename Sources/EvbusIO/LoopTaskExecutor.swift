/// Runs Swift concurrency jobs on an event loop's thread, so async code with this executor
/// preference runs between that loop's I/O and other work, never concurrently with it. Peers and
/// controllers both use one; a job enqueued after the loop stopped runs at once, as a job of the global executor
/// (see `EventLoop.enqueue`).
public final class LoopTaskExecutor: TaskExecutor {
    public let loop: EventLoop

    public init(loop: EventLoop) { self.loop = loop }

    public func enqueue(_ job: consuming ExecutorJob) {
        loop.enqueue(UnownedJob(job), on: self)
    }
}
