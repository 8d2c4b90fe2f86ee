import Evbus

/// `evbus bind QUEUE EXCHANGE [KEY]` and `evbus unbind QUEUE EXCHANGE [KEY]`.
struct BindCommand: EvbusCommand {
    static let spec = bindingSpec(name: "bind", abstract: "Route an exchange's messages with a matching key into a queue.")

    static func bindingSpec(name: String, abstract: String) -> CommandSpec {
        CommandSpec(
            name: name,
            abstract: abstract,
            discussion: "Direct exchanges match the key exactly; topic exchanges take a pattern ('*' one word, '#' zero or more); fanout exchanges ignore it.",
            positionals: [
                .init(name: "queue", help: "The queue."),
                .init(name: "exchange", help: "The exchange (not the default exchange '')."),
                .init(name: "key", help: "Binding key or pattern (default: empty).", isOptional: true),
            ],
            options: [CommandSpec.socketOption])
    }

    var queue: String
    var exchange: String
    var key: String
    var socket: String?

    init(_ a: ParsedArguments) throws(UsageError) {
        queue = a.positionals[0]
        exchange = a.positionals[1]
        key = a.positionals.count > 2 ? a.positionals[2] : ""
        socket = a.value("socket")
    }

    func run() async throws -> Int32 { try await run(unbinding: false) }

    func run(unbinding: Bool) async throws -> Int32 {
        let peer = try await Peer.connect(to: socket, name: "evbus \(unbinding ? "unbind" : "bind")")
        do {
            if unbinding {
                try await peer.unbind(queue: queue, exchange: exchange, key: key)
            } else {
                try await peer.bind(queue: queue, exchange: exchange, key: key)
            }
        } catch {
            await peer.close()
            throw error
        }
        await peer.close()
        return ExitCode.success
    }
}

struct UnbindCommand: EvbusCommand {
    static let spec = BindCommand.bindingSpec(name: "unbind", abstract: "Remove a binding (removing one that does not exist succeeds).")
    let binding: BindCommand

    init(_ a: ParsedArguments) throws(UsageError) { binding = try BindCommand(a) }

    func run() async throws -> Int32 { try await binding.run(unbinding: true) }
}
