import Evbus

/// `evbus delete exchange|queue NAME` and `evbus purge QUEUE`.
struct DeleteCommand: EvbusCommand {
    static let spec = CommandSpec(
        name: "delete",
        abstract: "Delete an exchange (with its bindings) or a queue (with its messages).",
        positionals: [
            .init(name: "kind", help: "exchange or queue."),
            .init(name: "name", help: "The name."),
        ],
        options: [
            CommandSpec.socketOption,
            .init(long: "if-unused", short: nil, valueName: nil, help: "Refuse if the exchange has bindings / the queue has consumers."),
            .init(long: "if-empty", short: nil, valueName: nil, help: "Queue: refuse if it holds messages."),
        ])

    var isQueue: Bool
    var name: String
    var ifUnused: Bool
    var ifEmpty: Bool
    var socket: String?

    init(_ a: ParsedArguments) throws(UsageError) {
        switch a.positionals[0] {
        case "exchange": isQueue = false
        case "queue": isQueue = true
        default: throw UsageError("The value '\(a.positionals[0])' is invalid for '<kind>': use exchange or queue")
        }
        name = a.positionals[1]
        ifUnused = a.flag("if-unused")
        ifEmpty = a.flag("if-empty")
        if ifEmpty && !isQueue { throw UsageError("--if-empty applies to queues, not exchanges") }
        socket = a.value("socket")
    }

    func run() async throws -> Int32 {
        let peer = try await Peer.connect(to: socket, name: "evbus delete")
        do {
            if isQueue {
                let count = try await peer.deleteQueue(name, ifUnused: ifUnused, ifEmpty: ifEmpty)
                Terminal.out("deleted queue \(name) (\(count) messages)\n")
            } else {
                try await peer.deleteExchange(name, ifUnused: ifUnused)
                Terminal.out("deleted exchange \(name)\n")
            }
        } catch {
            await peer.close()
            throw error
        }
        await peer.close()
        return ExitCode.success
    }
}

struct PurgeCommand: EvbusCommand {
    static let spec = CommandSpec(
        name: "purge",
        abstract: "Remove every ready message from a queue (unacknowledged ones stay).",
        positionals: [.init(name: "queue", help: "The queue.")],
        options: [CommandSpec.socketOption])

    var queue: String
    var socket: String?

    init(_ a: ParsedArguments) throws(UsageError) {
        queue = a.positionals[0]
        socket = a.value("socket")
    }

    func run() async throws -> Int32 {
        let peer = try await Peer.connect(to: socket, name: "evbus purge")
        do {
            let count = try await peer.purgeQueue(queue)
            Terminal.out("purged \(count) messages from \(queue)\n")
        } catch {
            await peer.close()
            throw error
        }
        await peer.close()
        return ExitCode.success
    }
}
