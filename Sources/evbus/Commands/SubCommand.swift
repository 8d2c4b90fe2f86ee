import Evbus
import Foundation

/// `evbus sub PATTERN...`: prints matching events until N arrived or Ctrl-C.
struct SubCommand: EvbusCommand {
    static let spec = CommandSpec(
        name: "sub",
        abstract: "Print events whose topics match the patterns.",
        discussion: """
            Each event is one line: TOPIC<TAB>PAYLOAD. In the payload, backslash, tab, newline and
            carriage return are written \\\\, \\t, \\n and \\r so an event is always one line.
            With --json each line is {"topic":..., "payload":..., "publisher":..., "sender":{"uid":...,"gid":...,"pid":...,"name":...}}
            (sender: who published it, as the kernel told the broker; absent if the broker did not say).
            Patterns: '*' matches exactly one word, '#' zero or more, e.g. sensors.*.temp or logs.#.
            If the broker restarts, sub reconnects and subscribes again (events published while no
            broker ran are missed), saying so on stderr; with --no-reconnect it exits with status 1.
            """,
        positionals: [.init(name: "pattern", help: "A topic pattern.", isRepeating: true)],
        options: [
            CommandSpec.socketOption,
            .init(long: "count", short: "n", valueName: "n", help: "Exit after <n> events."),
            .init(long: "json", short: nil, valueName: nil, help: "Print one JSON object per line."),
            .init(long: "policy", short: nil, valueName: "policy", help: "What the broker does while this subscriber reads too slowly: backpressure, drop or disconnect (default: the broker's slowConsumerPolicy)."),
            LongRunningPeer.option,
        ])

    var patterns: [String]
    var count: Int?
    var json: Bool
    var socket: String?
    var policy: SubscriptionPolicy
    var reconnect: Bool

    init(_ a: ParsedArguments) throws(UsageError) {
        patterns = a.positionals
        if let raw = a.value("policy") {
            guard let p = SubscriptionPolicy(rawValue: raw), p != .brokerDefault else {
                throw UsageError("The value '\(raw)' is invalid for '--policy <policy>': expected backpressure, drop or disconnect")
            }
            policy = p
        } else {
            policy = .brokerDefault
        }
        // Bad patterns are usage errors whether or not a broker is running: check them here.
        for pattern in patterns {
            do throws(WireError) {
                try TopicRules.validatePattern(pattern)
            } catch {
                throw UsageError(error.message)
            }
        }
        count = try a.int("count", in: 1...Int.max, spec: Self.spec)
        json = a.flag("json")
        socket = a.value("socket")
        reconnect = !a.flag("no-reconnect")
    }

    func run() async throws -> Int32 {
        let peer = try await LongRunningPeer.connect(socket: socket, name: "evbus sub", reconnect: reconnect)
        let subscription: Subscription
        do {
            subscription = try await peer.subscribe(patterns, policy: policy)
        } catch let error as EvbusError where error.code == .invalidArgument {
            await peer.close()
            throw UsageError(error.message)
        }
        var seen = 0
        for try await event in subscription {
            Terminal.out(json ? Self.jsonLine(event) : Self.textLine(event))
            seen += 1
            if let count, seen >= count { break }
        }
        await peer.close()
        return ExitCode.success
    }

    static func textLine(_ event: Event) -> String {
        var out = event.topic + "\t"
        for ch in event.text.unicodeScalars {
            switch ch {
            case "\\": out += "\\\\"
            case "\t": out += "\\t"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            default: out.unicodeScalars.append(ch)
            }
        }
        return out + "\n"
    }

    struct JSONEvent: Encodable {
        var topic: String
        var payload: String
        var publisher: UInt64
        var sender: JSONSender?
    }

    static func jsonLine(_ event: Event) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(JSONEvent(topic: event.topic, payload: event.text, publisher: event.publisher, sender: event.sender.map(JSONSender.init)))) ?? Data()
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}

/// A message's sender in `--json` output: as the kernel told the broker (PROTOCOL.md §5.15).
struct JSONSender: Encodable {
    var uid: UInt32
    var gid: UInt32
    var pid: UInt32
    var name: String

    init(_ s: Sender) {
        uid = s.uid
        gid = s.gid
        pid = s.pid
        name = s.name
    }
}
