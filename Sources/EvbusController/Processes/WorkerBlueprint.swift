import EvbusIO
import Glibc

/// What a process pool's workers do: typed handlers by event name. Input and output cross
/// processes in the compact codec (`CompactEncoder`), so any `Codable` type travels.
public struct WorkerBlueprint: Sendable {
    typealias Body = @Sendable ([UInt8]) async throws -> [UInt8]
    var handlers: [String: Body] = [:]

    public init() {}

    /// Handles `event`: its input decoded as `Input`, its return value sent back as the result.
    public mutating func on<Input: Decodable & Sendable, Output: Encodable & Sendable>(
        _ event: String, _ body: @escaping @Sendable (Input) async throws -> Output
    ) {
        handlers[event] = { bytes in
            let input = try CompactDecoder().decode(Input.self, from: bytes)
            return try CompactEncoder().encode(try await body(input))
        }
    }
}

/// The environment variable that makes a process a pool worker: the number of the descriptor
/// holding its end of the socket pair to the pool.
let poolWorkerVariable = "EVBUS_POOL_WORKER_FD"

extension ProcessPool {
    /// Call it first thing in a program that starts a pool of itself (or in any program a pool
    /// is given as its workers' executable). In a worker process it serves the pool with
    /// `blueprint`'s handlers on a controller of its own, one piece of work at a time, and exits
    /// when the pool closes its end; anywhere else it returns at once.
    public static func runWorkerIfAsked(_ blueprint: WorkerBlueprint) {
        guard let text = getenv(poolWorkerVariable), let fd = Int32(String(cString: text)) else { return }
        unsetenv(poolWorkerVariable)  // not for the processes a handler may start
        do {
            let controller = try Controller(name: "pool-worker")
            for (event, body) in blueprint.handlers {
                try controller.on(event) { (session: Session) async throws -> (any Sendable)? in
                    try await body(session.payload(as: [UInt8].self) ?? [])
                }
            }
            try controller.loop.runAndWait { [controller] in
                try StreamDelegate.start(fd: fd, controller: controller, user: WorkerSide(controller: controller))
            }
        } catch {
            let message = "evbus pool worker: cannot start: \(error)\n"
            _ = write(2, message, message.utf8.count)
            exit(70)
        }
        while true { pause() }  // the controller's thread works; this one waits for the exit
    }
}

/// A worker's end of the socket pair, on its controller's thread: runs each piece of work as a
/// dispatch and writes back its result or error.
final class WorkerSide: StreamProtocol {
    let controller: Controller
    var transport: StreamTransport?
    var reader = PoolFrameReader()

    init(controller: Controller) { self.controller = controller }

    func connectionMade(_ transport: StreamTransport) {
        self.transport = transport
        transport.write(PoolFrame.encode(.ready, id: 0, body: []))
    }

    func dataReceived(_ data: [UInt8]) {
        reader.append(data)
        do {
            while let frame = try reader.next() {
                guard frame.kind == .work, let (event, input) = PoolFrame.parseWork(frame.body) else { throw PoolFrameReader.Corrupt() }
                run(event, input, id: frame.id)
            }
        } catch {
            exit(65)  // the pool sent something no pool sends: nothing sensible to answer
        }
    }

    private func run(_ event: String, _ input: [UInt8], id: UInt64) {
        let pending = controller.dispatch(event, input)
        let me = LoopBound(self, loop: controller.loop)
        pending.whenResolved {
            // Resolved on the controller's thread, this protocol's, so the transport is usable.
            let frame: [UInt8]
            do {
                let result = try pending.wait()
                if result.handlersRun == 0 {
                    frame = PoolFrame.encode(.failure, id: id, body: Array("no worker handler for '\(event)'".utf8))
                } else {
                    frame = PoolFrame.encode(.result, id: id, body: result.results.first as? [UInt8] ?? [])
                }
            } catch {
                frame = PoolFrame.encode(.failure, id: id, body: Array("\(error)".utf8))
            }
            me.value.transport?.write(frame)
        }
    }

    func connectionLost(_ reason: ConnectionLost) {
        exit(0)  // the pool closed its end (shutdown) or went away: this worker's life is over
    }
}
