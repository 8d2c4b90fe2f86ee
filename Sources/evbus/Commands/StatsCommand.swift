import Evbus
import Foundation

/// `evbus stats`: the broker's counters.
struct StatsCommand: EvbusCommand {
    static let spec = CommandSpec(
        name: "stats",
        abstract: "Print the broker's counters.",
        options: [
            CommandSpec.socketOption,
            .init(long: "json", short: nil, valueName: nil, help: "Print one JSON object."),
        ])

    var json: Bool
    var socket: String?

    init(_ a: ParsedArguments) throws(UsageError) {
        json = a.flag("json")
        socket = a.value("socket")
    }

    func run() async throws -> Int32 {
        let peer = try await Peer.connect(to: socket, name: "evbus stats")
        let entries = try await peer.brokerStats()
        await peer.close()
        if json {
            let object = Dictionary(entries.map { ($0.name, $0.value) }, uniquingKeysWith: { a, _ in a })
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            Terminal.out(String(decoding: try encoder.encode(object), as: UTF8.self) + "\n")
        } else {
            let width = entries.map(\.name.count).max() ?? 0
            for e in entries {
                Terminal.out(e.name + String(repeating: " ", count: width - e.name.count + 2) + "\(e.value)\n")
            }
        }
        return ExitCode.success
    }
}
