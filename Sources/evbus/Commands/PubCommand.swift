import Evbus
import Glibc
import Synchronization

/// `evbus pub TOPIC [MESSAGE]` or `evbus pub --exchange X --key K [MESSAGE]`: publishes one
/// message, or each line of stdin.
struct PubCommand: EvbusCommand {
    static let spec = CommandSpec(
        name: "pub",
        abstract: "Publish a message to a topic, or to an exchange with a routing key.",
        discussion: """
            Without --exchange the first argument is a topic (words separated by '.'), published on the
            default topic exchange amq.topic. With --exchange (use '' for the default exchange, which
            routes to the queue named by the key) give the routing key with --key.
            Without <message>, each line of standard input is published as one message (without its newline).
            """,
        positionals: [
            .init(name: "topic", help: "Words separated by '.', e.g. sensors.kitchen.temp (not with --exchange).", isOptional: true),
            .init(name: "message", help: "The payload (UTF-8 text).", isOptional: true),
        ],
        options: [
            CommandSpec.socketOption,
            .init(long: "exchange", short: "e", valueName: "name", help: "Publish to this exchange ('' = default) instead of a topic."),
            .init(long: "key", short: "k", valueName: "routing-key", help: "The routing key (with --exchange)."),
            .init(long: "mandatory", short: nil, valueName: nil, help: "Fail if the message reaches no queue (with --exchange)."),
            .init(long: "confirm", short: nil, valueName: nil, help: "Wait until the broker confirms every message (with --exchange)."),
            .init(long: "name", short: nil, valueName: "name", help: "The name to give the broker in HELLO (default: evbus pub); receivers see it beside the uid, gid and pid the kernel reports."),
        ] + MessageOptions.specs)

    var topic: String?
    var exchange: String?
    var key: String
    var message: String?
    var mandatory: Bool
    var confirm: Bool
    var properties: MessageProperties
    var socket: String?
    var name: String

    init(_ a: ParsedArguments) throws(UsageError) {
        name = a.value("name") ?? "evbus pub"
        guard name.utf8.count <= 255 else { throw UsageError("The value for '--name <name>' is \(name.utf8.count) bytes; at most 255") }
        exchange = a.value("exchange")
        mandatory = a.flag("mandatory")
        confirm = a.flag("confirm")
        properties = try MessageOptions.parse(a, spec: Self.spec)
        socket = a.value("socket")
        if exchange != nil {
            guard let k = a.value("key") else { throw UsageError("--exchange needs --key <routing-key>") }
            guard a.positionals.count <= 1 else { throw UsageError("Unexpected argument '\(a.positionals[1])' (with --exchange only <message> is given)") }
            key = k
            message = a.positionals.first
        } else {
            guard !a.positionals.isEmpty else { throw UsageError("Missing expected argument '<topic>' (or give --exchange and --key)") }
            if a.value("key") != nil { throw UsageError("--key needs --exchange (a topic is its own key)") }
            if mandatory || confirm { throw UsageError("--mandatory and --confirm need --exchange") }
            topic = a.positionals[0]
            key = topic!
            // A bad topic is a usage error whether or not a broker is running: check it here.
            do throws(WireError) {
                try TopicRules.validateTopic(key)
            } catch {
                throw UsageError(error.message)
            }
            message = a.positionals.count > 1 ? a.positionals[1] : nil
        }
    }

    func run() async throws -> Int32 {
        let returned = Atomic<Int>(0)
        var options = Peer.Options()
        options.onReturn = { r in
            returned.add(1, ordering: .relaxed)
            Terminal.err("Error: message returned: it reached no queue (exchange \"\(r.exchange)\", key \"\(r.routingKey)\")\n")
        }
        let refusals = Atomic<Int>(0)
        options.onAsyncError = { e in
            refusals.add(1, ordering: .relaxed)
            Terminal.err("Error: \(e.message)\n")
        }
        let peer = try await Peer.connect(to: socket, name: name, options: options)
        do {
            if let message {
                try await send(peer, message)
            } else {
                while let line = readLine(strippingNewline: true) { try await send(peer, line) }
            }
            if confirm { try await peer.waitForConfirms() }
            try await peer.flush()
        } catch let error as EvbusError where error.code == .invalidArgument {
            await peer.close()
            throw UsageError(error.message)
        } catch {
            await peer.close()
            throw error
        }
        await peer.close()
        return returned.load(ordering: .relaxed) + refusals.load(ordering: .relaxed) == 0 ? ExitCode.success : ExitCode.failure
    }

    private func send(_ peer: Peer, _ text: String) async throws {
        if let exchange {
            try await peer.publish(to: exchange, key: key, text, properties: properties, mandatory: mandatory, confirm: confirm)
        } else {
            try await peer.publish(key, Array(text.utf8), properties: properties)
        }
    }
}
