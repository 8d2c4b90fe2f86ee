import Evbus
import Glibc

/// `evbus pub TOPIC [MESSAGE]`: publishes one message, or each line of stdin.
struct PubCommand: EvbusCommand {
    static let spec = CommandSpec(
        name: "pub",
        abstract: "Publish a message to a topic.",
        discussion: "Without <message>, each line of standard input is published as one message (without its newline).",
        positionals: [
            .init(name: "topic", help: "Words separated by '.', e.g. sensors.kitchen.temp."),
            .init(name: "message", help: "The payload (UTF-8 text).", isOptional: true),
        ],
        options: [CommandSpec.socketOption])

    var topic: String
    var message: String?
    var socket: String?

    init(_ a: ParsedArguments) throws(UsageError) {
        topic = a.positionals[0]
        message = a.positionals.count > 1 ? a.positionals[1] : nil
        socket = a.value("socket")
    }

    func run() async throws -> Int32 {
        let peer = try await Peer.connect(to: socket, name: "evbus pub")
        do {
            if let message {
                try await peer.publish(topic, message)
            } else {
                while let line = readLine(strippingNewline: true) {
                    try await peer.publish(topic, line)
                }
            }
            try await peer.flush()
        } catch let error as EvbusError where error.code == .invalidArgument {
            await peer.close()
            throw UsageError(error.message)
        }
        await peer.close()
        return ExitCode.success
    }
}
