import Evbus
import Glibc

/// Peers the end-to-end tests need as separate processes, doing what no shipped command does:
///
///     evbus-test-peer blocking-responder <socket> <queue> <marker-file>
///         Serves <queue> with a plain (non-async) handler that creates <marker-file>, then never
///         returns: a responder caught mid-request, to be killed there.
@main
struct TestPeer {
    static func main() async throws {
        let args = Array(CommandLine.arguments.dropFirst())
        guard args.first == "blocking-responder", args.count == 4 else {
            let usage = "usage: evbus-test-peer blocking-responder <socket> <queue> <marker-file>\n"
            _ = write(2, usage, usage.utf8.count)
            exit(64)
        }
        let (socket, queue, marker) = (args[1], args[2], args[3])
        let peer = try await Peer.connect(to: socket, name: "blocking-responder")
        _ = try await peer.respond(on: queue, prefetch: 1) { (_: Request) throws -> [UInt8] in
            close(open(marker, O_CREAT | O_WRONLY, 0o644))
            while true { pause() }  // blocks the peer's loop thread: nothing more is written
        }
        while true { try await Task.sleep(for: .seconds(3600)) }
    }
}
