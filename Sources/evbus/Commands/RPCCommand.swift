import Evbus
import Foundation

/// `evbus rpc DESTINATION [PAYLOAD]`: one request, its reply on stdout.
struct RPCCommand: EvbusCommand {
    static let spec = CommandSpec(
        name: "rpc",
        abstract: "Send a request and print its reply.",
        discussion: """
            <destination> is a queue (e.g. rpc_queue), or with --exchange the routing key. Without
            <payload> the request is all of standard input. The reply's payload is printed (with a
            newline added if it has none) and the exit status is 0. Errors are printed and exit 1:
            no responder (answered at once), a remote error from the responder's handler, the
            responder going away before replying, a timeout, or a refusal by the broker.
            """,
        positionals: [
            .init(name: "destination", help: "A queue, or the routing key with --exchange."),
            .init(name: "payload", help: "The request (UTF-8 text).", isOptional: true),
        ],
        options: [
            CommandSpec.socketOption,
            .init(long: "exchange", short: "e", valueName: "name", help: "Send to this exchange with <destination> as the key."),
            .init(long: "timeout", short: "t", valueName: "ms", help: "Give up after <ms> milliseconds (default 30000)."),
            .init(long: "header", short: nil, valueName: "name=value", help: "A request header; repeat for more."),
        ])

    var destination: Destination
    var payload: String?
    var timeoutMillis: Int
    var headers: [String: String]
    var socket: String?

    init(_ a: ParsedArguments) throws(UsageError) {
        let target = a.positionals[0]
        destination = a.value("exchange").map { .exchange($0, key: target) } ?? .queue(target)
        payload = a.positionals.count > 1 ? a.positionals[1] : nil
        timeoutMillis = try a.int("timeout", in: 1...86_400_000, spec: Self.spec) ?? 30_000
        headers = try MessageOptions.parse(a, spec: Self.spec).headers
        socket = a.value("socket")
    }

    func run() async throws -> Int32 {
        let body = payload.map { Array($0.utf8) } ?? Array(FileHandle.standardInput.readDataToEndOfFile())
        let peer = try await Peer.connect(to: socket, name: "evbus rpc")
        let reply: Reply
        do {
            reply = try await peer.request(to: destination, body, headers: headers, timeout: .milliseconds(timeoutMillis))
        } catch let error as EvbusError {
            await peer.close()
            Terminal.err("Error: \(Self.describe(error))\n")
            return ExitCode.failure
        }
        await peer.close()
        let text = reply.text
        Terminal.out(text.hasSuffix("\n") ? text : text + "\n")
        return ExitCode.success
    }

    static func describe(_ e: EvbusError) -> String {
        switch e.code {
        case .remote: "the responder failed (\(e.remoteCode ?? "error")): \(e.message)"
        default: e.message
        }
    }
}
