import Evbus
import Foundation

/// `evbus-fib server`: answers fib requests on a queue, computing on a worker pool so the peer's
/// event loop never stalls; prefetch = workers, so two servers on one queue share the load.
enum FibServer {
    static func run(socket: String?, queue: String, workers: Int) async throws -> Int32 {
        let pool = try ControllerPool(name: "fib", workers: workers)
        let peer = try await Peer.connect(to: socket, name: "evbus-fib server")
        let responder = try await peer.respond(on: queue, prefetch: workers) { (request: Request) -> String in
            switch Fib.parse(request.text) {
            case .failure(let error):
                throw RemoteError("invalid-argument", error.message)
            case .success(let n):
                let result = try await pool.submit { _ in Fib.compute(n) }.value
                return String(result)
            }
        }
        FileHandle.standardError.write(Data("evbus-fib server: serving \(queue) with \(workers) workers\n".utf8))
        await Signals.waitForTermination()
        try? await responder.cancel()
        await peer.close()
        pool.shutdown()
        return 0
    }
}
