import Evbus

/// `evbus declare exchange NAME --type T` / `evbus declare queue [NAME] [options]`.
struct DeclareCommand: EvbusCommand {
    static let spec = CommandSpec(
        name: "declare",
        abstract: "Create an exchange or a queue (or check that it exists as described).",
        discussion: """
            Declaring is idempotent: declaring what exists with the same type or options succeeds; with
            different ones it fails (precondition-failed). 'declare queue' without a name lets the broker
            choose one and prints it. An --exclusive queue belongs to this command's connection and is
            deleted when it exits; use it from the library. Sizes and TTLs are whole numbers.
            """,
        positionals: [
            .init(name: "kind", help: "exchange or queue."),
            .init(name: "name", help: "The name (optional for a queue).", isOptional: true),
        ],
        options: [
            CommandSpec.socketOption,
            .init(long: "type", short: "t", valueName: "type", help: "Exchange type: fanout, direct or topic."),
            .init(long: "durable", short: nil, valueName: nil, help: "Keep it across broker restarts (and, for a queue, its persistent messages)."),
            .init(long: "exclusive", short: nil, valueName: nil, help: "Queue: only this connection may use it."),
            .init(long: "auto-delete", short: nil, valueName: nil, help: "Queue: delete it when its last consumer leaves."),
            .init(long: "max-length", short: nil, valueName: "n", help: "Queue: keep at most <n> ready messages."),
            .init(long: "max-bytes", short: nil, valueName: "n", help: "Queue: keep at most <n> payload bytes ready."),
            .init(long: "overflow", short: nil, valueName: "policy", help: "Queue: drop-head (default) or reject-publish."),
            .init(long: "ttl", short: nil, valueName: "ms", help: "Queue: messages expire after <ms> milliseconds."),
            .init(long: "dead-letter-exchange", short: nil, valueName: "name", help: "Queue: where rejected, expired and dropped messages go."),
            .init(long: "dead-letter-routing-key", short: nil, valueName: "key", help: "Queue: the key dead letters get (default: their own)."),
        ])

    enum Target {
        case exchange(String, ExchangeKind, durable: Bool)
        case queue(String, QueueOptions)
    }

    var target: Target
    var socket: String?

    init(_ a: ParsedArguments) throws(UsageError) {
        socket = a.value("socket")
        let queueOptions = ["exclusive", "auto-delete", "max-length", "max-bytes", "overflow", "ttl", "dead-letter-exchange", "dead-letter-routing-key"]
        switch a.positionals[0] {
        case "exchange":
            guard a.positionals.count == 2 else { throw UsageError("Missing expected argument '<name>' (an exchange needs a name)") }
            guard let raw = a.value("type") else { throw UsageError("An exchange needs --type fanout|direct|topic") }
            guard let kind = ExchangeKind(name: raw) else {
                throw UsageError("The value '\(raw)' is invalid for '--type <type>': use fanout, direct or topic")
            }
            if let misplaced = queueOptions.first(where: { a.flag($0) || a.value($0) != nil }) {
                throw UsageError("--\(misplaced) applies to queues, not exchanges")
            }
            target = .exchange(a.positionals[1], kind, durable: a.flag("durable"))
        case "queue":
            if a.value("type") != nil { throw UsageError("--type applies to exchanges, not queues") }
            var o = QueueOptions()
            o.exclusive = a.flag("exclusive")
            o.autoDelete = a.flag("auto-delete")
            o.durable = a.flag("durable")
            o.maxLength = try a.int("max-length", in: 0...Int.max, spec: Self.spec).map(UInt64.init)
            o.maxBytes = try a.int("max-bytes", in: 0...Int.max, spec: Self.spec).map(UInt64.init)
            if let raw = a.value("overflow") {
                guard let policy = OverflowPolicy(name: raw) else {
                    throw UsageError("The value '\(raw)' is invalid for '--overflow <policy>': use drop-head or reject-publish")
                }
                o.overflow = policy
            }
            o.messageTTL = try a.int("ttl", in: 0...Int(UInt32.max - 1), spec: Self.spec).map(UInt32.init)
            o.deadLetterExchange = a.value("dead-letter-exchange")
            o.deadLetterRoutingKey = a.value("dead-letter-routing-key")
            target = .queue(a.positionals.count > 1 ? a.positionals[1] : "", o)
        default:
            throw UsageError("The value '\(a.positionals[0])' is invalid for '<kind>': use exchange or queue")
        }
    }

    func run() async throws -> Int32 {
        let peer = try await Peer.connect(to: socket, name: "evbus declare")
        do {
            switch target {
            case .exchange(let name, let kind, let durable):
                try await peer.declareExchange(name, kind: kind, durable: durable)
                Terminal.out("exchange \(name) (\(kind)\(durable ? ", durable" : ""))\n")
            case .queue(let name, let options):
                let info = try await peer.declareQueue(name, options)
                Terminal.out("\(info.name)\n")
            }
        } catch {
            await peer.close()
            throw error
        }
        await peer.close()
        return ExitCode.success
    }
}
