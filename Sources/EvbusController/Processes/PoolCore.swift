import EvbusIO
import Glibc

/// A process pool's state, on its I/O controller's thread alone: the workers, the work waiting
/// for an idle one, and each worker's piece in flight.
final class PoolCore {
    struct Job {
        let id: UInt64
        let event: String
        let input: [UInt8]
        /// Resolves the caller's Pending: with the output's bytes, or an error.
        let finish: @Sendable (Result<[UInt8], any Error>) -> Void
    }

    /// One worker process and the link to it.
    final class Worker: StreamProtocol {
        let index: Int
        let pid: pid_t
        /// Strong: a worker's link keeps the pool's state alive until it closes, so a pool
        /// dropped while its workers stop (ProcessPool's deinit) is still there to collect them.
        /// The cycle ends when `lost` takes the worker out of `workers`.
        let core: PoolCore
        var transport: StreamTransport?
        var reader = PoolFrameReader()
        var ready = false
        var running: Job?

        init(index: Int, pid: pid_t, core: PoolCore) {
            self.index = index
            self.pid = pid
            self.core = core
        }

        func connectionMade(_ transport: StreamTransport) { self.transport = transport }

        func dataReceived(_ data: [UInt8]) {
            reader.append(data)
            do {
                while let frame = try reader.next() { core.received(frame.kind, id: frame.id, body: frame.body, from: self) }
            } catch {
                transport?.abortConnection()  // a worker that says nonsense is treated as crashed
            }
        }

        func connectionLost(_ reason: ConnectionLost) { core.lost(self) }

        var name: String { "worker \(index) (pid \(pid))" }
    }

    let name: String
    let controller: Controller
    let executable: String
    let arguments: [String]
    private(set) var workers: [Worker?]
    private var waiting: [Job] = []
    private var stopping = false
    private var onStopped: [@Sendable () -> Void] = []
    /// Called with the worker pids whenever they change (the pool shows them to other threads).
    let published: @Sendable ([Int32], Int) -> Void
    private var restarts = 0
    /// Workers that ended before they were ready, one after another with none ready in
    /// between, and how the last one ended. From `brokenAfter` on the pool counts as broken:
    /// waiting work fails instead of waiting for a worker that may never start.
    private var failedStarts = 0
    private var lastFailedStart = ""
    static let brokenAfter = 3

    init(name: String, controller: Controller, executable: String, arguments: [String], count: Int,
         published: @escaping @Sendable ([Int32], Int) -> Void) {
        self.name = name
        self.controller = controller
        self.executable = executable
        self.arguments = arguments
        self.published = published
        workers = Array(repeating: nil, count: count)
    }

    func start() throws(ControllerError) {
        for i in workers.indices { try startWorker(i) }
    }

    private func startWorker(_ index: Int) throws(ControllerError) {
        let (pid, fd) = try WorkerProcess.spawn(executable: executable, arguments: arguments)
        let worker = Worker(index: index, pid: pid, core: self)
        workers[index] = worker
        do {
            try StreamDelegate.start(fd: fd, controller: controller, user: worker)
        } catch {
            workers[index] = nil
            _ = WorkerProcess.reap(pid)
            throw error
        }
        publish()
    }

    private func publish() { published(workers.compactMap { $0?.pid }, restarts) }

    // MARK: Work

    func submit(_ job: Job) {
        guard !stopping else {
            job.finish(.failure(ControllerError(.shutDown, "the process pool '\(name)' is shut down")))
            return
        }
        if let broken = brokenError { return job.finish(.failure(broken)) }
        waiting.append(job)
        assign()
    }

    /// Why no work can run, while no worker has started since `brokenAfter` failed starts in
    /// a row (it keeps trying: one that comes up ends this).
    private var brokenError: ControllerError? {
        guard failedStarts >= Self.brokenAfter, !workers.contains(where: { $0?.ready == true }) else { return nil }
        return ControllerError(.workerCrashed, "no worker of the process pool '\(name)' could start (\(failedStarts) tries in a row; the last: \(lastFailedStart))")
    }

    /// A worker did not come up: counted, and once the pool is broken the waiting work fails.
    private func failedStart(_ how: String) {
        failedStarts += 1
        lastFailedStart = how
        guard let broken = brokenError else { return }
        let stranded = waiting
        waiting = []
        for job in stranded { job.finish(.failure(broken)) }
    }

    /// Gives waiting work to idle workers, oldest first.
    private func assign() {
        while !waiting.isEmpty, let worker = workers.first(where: { $0 != nil && $0!.ready && $0!.running == nil }) ?? nil {
            let job = waiting.removeFirst()
            worker.running = job
            worker.transport?.write(PoolFrame.work(id: job.id, event: job.event, input: job.input))
        }
        if stopping { closeIdleWorkers() }
    }

    func received(_ kind: PoolFrame.Kind, id: UInt64, body: ArraySlice<UInt8>, from worker: Worker) {
        switch kind {
        case .ready:
            worker.ready = true
            failedStarts = 0
        case .result, .failure:
            guard let job = worker.running, job.id == id else { return }
            worker.running = nil
            if kind == .result {
                job.finish(.success(Array(body)))
            } else {
                job.finish(.failure(ControllerError(.workerFailed, "\(worker.name) failed '\(job.event)': \(String(decoding: body, as: UTF8.self))")))
            }
        case .work:
            worker.transport?.abortConnection()
            return
        }
        assign()
    }

    /// A worker's link closed: it exited or crashed (or was told to stop). Its work in flight
    /// fails; unless the pool is stopping, a new worker takes its place (after a second if this
    /// one never became ready, so a worker that cannot start does not spin).
    func lost(_ worker: Worker) {
        guard workers[worker.index] === worker else { return }
        workers[worker.index] = nil
        let how = WorkerProcess.reap(worker.pid)
        if let job = worker.running {
            job.finish(.failure(ControllerError(.workerCrashed, "\(worker.name) \(how) while running '\(job.event)'")))
        }
        if stopping {
            publish()
            finishStopIfDone()
            return
        }
        restarts += 1
        let index = worker.index
        let delay: UInt64 = worker.ready ? 0 : 1_000_000_000
        controller.loop.scheduleTimer(afterNanos: delay) { [self] in
            guard !stopping, workers[index] == nil else { return }
            do throws(ControllerError) { try startWorker(index) } catch { lostStart(index, error) }
            assign()
        }
        publish()
        // After `publish`: whoever hears of the failure sees the restart counted.
        if !worker.ready { failedStart("\(worker.name) \(how) before it was ready") }
    }

    /// A replacement could not be started: try again later.
    private func lostStart(_ index: Int, _ error: ControllerError) {
        failedStart(error.message)
        controller.loop.scheduleTimer(afterNanos: 1_000_000_000) { [self] in
            guard !stopping, workers[index] == nil else { return }
            do throws(ControllerError) { try startWorker(index) } catch { lostStart(index, error) }
            assign()
        }
    }

    // MARK: Stopping

    /// Refuses new work; what is queued still runs; then every worker's link is closed (workers
    /// exit when it is) and `done` runs once all are collected.
    func shutdown(_ done: @escaping @Sendable () -> Void) {
        onStopped.append(done)
        stopping = true
        closeIdleWorkers()
        finishStopIfDone()
    }

    private func closeIdleWorkers() {
        guard waiting.isEmpty else { return }
        for case let worker? in workers where worker.running == nil {
            worker.transport?.loseConnection()
        }
    }

    private func finishStopIfDone() {
        guard stopping, workers.allSatisfy({ $0 == nil }) else { return }
        // No worker is left to run what still waits (none could start): it fails.
        let stranded = waiting
        waiting = []
        for job in stranded { job.finish(.failure(ControllerError(.shutDown, "the process pool '\(name)' stopped with no worker left to run '\(job.event)'"))) }
        let callbacks = onStopped
        onStopped = []
        for c in callbacks { c() }
    }
}
