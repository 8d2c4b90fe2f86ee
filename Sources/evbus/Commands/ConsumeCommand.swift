import Evbus
import Foundation

/// `evbus consume QUEUE` or `evbus consume --exchange X [--key K]...`: prints deliveries.
struct ConsumeCommand: EvbusCommand {
    static let spec = CommandSpec(
        name: "consume",
        abstract: "Print messages from a queue, acknowledging each after printing it.",
        discussion: """
            Each message is one line: ROUTING-KEY<TAB>PAYLOAD, escaped as in 'evbus sub'; with --json one
            object per line (exchange, routing_key, payload, redelivered, delivery_tag, headers, publisher, and
            sender: uid, gid, pid and name as the kernel told the broker). Without <queue>, --exchange makes a private queue (exclusive, broker-named),
            binds it with each --key (none: the empty key, which is what fanout exchanges want) and
            consumes it, as RabbitMQ's receive_logs tutorials do.
            --ack manual (default) acknowledges each message after it is printed; auto lets the broker
            count it acknowledged when sent; none never acknowledges, so every message goes back to the
            queue (flagged redelivered) when the command exits: a way to look without taking.
            With --count and no --prefetch, the prefetch is the count, so nothing extra is taken.
            If the broker restarts, consume reconnects, declares and binds its queue again and goes on
            (saying so on stderr; a message it held unacknowledged comes again, flagged redelivered,
            if its queue is durable); with --no-reconnect it exits with status 1.
            """,
        positionals: [.init(name: "queue", help: "The queue (or give --exchange).", isOptional: true)],
        options: [
            CommandSpec.socketOption,
            .init(long: "exchange", short: "e", valueName: "name", help: "Consume a private queue bound to this exchange."),
            .init(long: "key", short: "k", valueName: "key", help: "Binding key or pattern for --exchange; repeat for more."),
            .init(long: "ack", short: nil, valueName: "mode", help: "manual (default), auto or none."),
            .init(long: "prefetch", short: nil, valueName: "n", help: "At most <n> unacknowledged messages at once (0 = no limit)."),
            .init(long: "count", short: "n", valueName: "n", help: "Exit after <n> messages."),
            .init(long: "json", short: nil, valueName: nil, help: "Print one JSON object per line."),
            LongRunningPeer.option,
        ])

    enum AckChoice: String { case manual, auto, none }

    var queue: String?
    var exchange: String?
    var keys: [String]
    var ack: AckChoice
    var prefetch: Int
    var count: Int?
    var json: Bool
    var socket: String?
    var reconnect: Bool

    init(_ a: ParsedArguments) throws(UsageError) {
        queue = a.positionals.first
        exchange = a.value("exchange")
        keys = a.allValues("key")
        if queue != nil && exchange != nil { throw UsageError("Give either <queue> or --exchange, not both") }
        if queue == nil && exchange == nil { throw UsageError("Missing expected argument '<queue>' (or give --exchange)") }
        if exchange == nil && !keys.isEmpty { throw UsageError("--key needs --exchange") }
        let raw = a.value("ack") ?? "manual"
        guard let choice = AckChoice(rawValue: raw) else {
            throw UsageError("The value '\(raw)' is invalid for '--ack <mode>': use manual, auto or none")
        }
        ack = choice
        count = try a.int("count", in: 1...Int.max, spec: Self.spec)
        prefetch = try a.int("prefetch", in: 0...Int(UInt16.max), spec: Self.spec) ?? min(count ?? 0, Int(UInt16.max))
        json = a.flag("json")
        socket = a.value("socket")
        reconnect = !a.flag("no-reconnect")
    }

    func run() async throws -> Int32 {
        let peer = try await LongRunningPeer.connect(socket: socket, name: "evbus consume", reconnect: reconnect)
        do {
            var name = queue ?? ""
            if let exchange {
                name = try await peer.declareQueue("", QueueOptions(exclusive: true)).name
                for key in keys.isEmpty ? [""] : keys { try await peer.bind(queue: name, exchange: exchange, key: key) }
            }
            let consumer = try await peer.consume(name, ack: ack == .auto ? .auto : .manual, prefetch: prefetch)
            var seen = 0
            for try await delivery in consumer {
                Terminal.out(json ? Self.jsonLine(delivery) : Self.textLine(delivery))
                if ack == .manual { try delivery.ack() }
                seen += 1
                if let count, seen >= count { break }
            }
        } catch {
            await peer.close()
            throw error
        }
        await peer.close()
        return ExitCode.success
    }

    static func textLine(_ d: Delivery) -> String {
        SubCommand.textLine(Event(topic: d.routingKey, payload: d.payload))
    }

    struct JSONDelivery: Encodable {
        var exchange: String
        var routing_key: String
        var payload: String
        var redelivered: Bool
        var delivery_tag: UInt64
        var headers: [String: String]?
        var publisher: UInt64
        var sender: JSONSender?
    }

    static func jsonLine(_ d: Delivery) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let value = JSONDelivery(
            exchange: d.exchange, routing_key: d.routingKey, payload: d.text, redelivered: d.redelivered,
            delivery_tag: d.deliveryTag, headers: d.properties.headers.isEmpty ? nil : d.properties.headers,
            publisher: d.publisher, sender: d.sender.map(JSONSender.init))
        let data = (try? encoder.encode(value)) ?? Data()
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}
