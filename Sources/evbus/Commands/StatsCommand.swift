import Evbus
import Foundation

/// `evbus stats`: the broker's counters, then every exchange and queue.
struct StatsCommand: EvbusCommand {
    static let spec = CommandSpec(
        name: "stats",
        abstract: "Print the broker's counters, exchanges and queues.",
        discussion: """
            Queue rates are per second over the broker's last one-second sample. --format json (or
            --json): one object with every counter as a number, plus "exchanges" and "queues" arrays.
            --format prometheus: the Prometheus text format, for a scraper or node_exporter's
            textfile collector (docs/OPERATIONS.md).
            """,
        options: [
            CommandSpec.socketOption,
            .init(long: "format", short: "f", valueName: "format", help: "table (default), json or prometheus."),
            .init(long: "json", short: nil, valueName: nil, help: "Same as --format json."),
            .init(long: "connections", short: nil, valueName: nil, help: "List every connection instead: who, what it subscribes to and consumes, bytes queued, rates."),
        ])

    enum Format: String { case table, json, prometheus }

    var format: Format
    var socket: String?
    var connections: Bool

    init(_ a: ParsedArguments) throws(UsageError) {
        socket = a.value("socket")
        connections = a.flag("connections")
        if let raw = a.value("format") {
            guard let f = Format(rawValue: raw) else {
                throw UsageError("The value '\(raw)' is invalid for '--format <format>': expected table, json or prometheus")
            }
            if a.flag("json") && f != .json { throw UsageError("--json and --format \(raw) contradict each other") }
            format = f
        } else {
            format = a.flag("json") ? .json : .table
        }
        if connections && format == .prometheus { throw UsageError("--connections prints a table or JSON, not prometheus") }
    }

    func run() async throws -> Int32 {
        let peer = try await Peer.connect(to: socket, name: "evbus stats")
        if connections {
            let list: [ConnectionSummary]
            do { list = try await peer.connections() } catch {
                await peer.close()
                throw error
            }
            await peer.close()
            Terminal.out(format == .json ? ConnectionsFormat.json(list) : ConnectionsFormat.table(list))
            return ExitCode.success
        }
        let entries: [StatEntry]
        let topology: (exchanges: [ExchangeSummary], queues: [QueueSummary])
        do {
            entries = try await peer.brokerStats()
            topology = try await peer.topology()
        } catch {
            await peer.close()
            throw error
        }
        await peer.close()
        switch format {
        case .table: Terminal.out(Self.tables(entries, topology.exchanges, topology.queues))
        case .json: Terminal.out(Self.json(entries, topology.exchanges, topology.queues))
        case .prometheus: Terminal.out(PrometheusFormat.render(entries, topology.exchanges, topology.queues))
        }
        return ExitCode.success
    }

    static func tables(_ entries: [StatEntry], _ exchanges: [ExchangeSummary], _ queues: [QueueSummary]) -> String {
        let width = entries.map(\.name.count).max() ?? 0
        var out = ""
        for e in entries { out += e.name + String(repeating: " ", count: width - e.name.count + 2) + "\(e.value)\n" }
        out += "\n"
        var rows = [["EXCHANGE", "TYPE", "BINDINGS"]]
        for e in exchanges {
            var bound = e.bindings.map { e.kind == .fanout ? $0.queue : "\($0.queue) <- \($0.key)" }
            if e.subscriptions > 0 { bound.insert("\(e.subscriptions) subscriptions", at: 0) }
            if e.name.isEmpty { bound = ["every queue, by name"] }
            rows.append([e.name.isEmpty ? "(default)" : e.name, "\(e.kind)\(e.durable ? ", durable" : "")", bound.isEmpty ? "-" : bound.joined(separator: "; ")])
        }
        out += table(rows) + "\n"
        var queueRows = [["QUEUE", "READY", "UNACKED", "CONSUMERS", "PUBLISH/S", "DELIVER/S", "ACK/S", "DISK", "FLAGS"]]
        for q in queues {
            let flags = [q.durable ? "durable" : nil, q.exclusive ? "exclusive" : nil, q.autoDelete ? "auto-delete" : nil]
                .compactMap { $0 }.joined(separator: ",")
            queueRows.append([
                q.name, "\(q.ready)", "\(q.unacked)", "\(q.consumers)", "\(q.publishRate)", "\(q.deliverRate)", "\(q.ackRate)",
                q.durable ? "\(q.diskBytes)" : "-", flags.isEmpty ? "-" : flags,
            ])
        }
        out += queues.isEmpty ? "(no queues)\n" : table(queueRows)
        return out
    }

    /// Left-aligned columns two spaces apart.
    static func table(_ rows: [[String]]) -> String {
        let widths = (0..<rows[0].count).map { c in rows.map { $0[c].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { c, cell in
                c == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[c] - cell.count + 2)
            }.joined()
        }.joined(separator: "\n") + "\n"
    }

    static func json(_ entries: [StatEntry], _ exchanges: [ExchangeSummary], _ queues: [QueueSummary]) -> String {
        var object: [String: Any] = [:]
        for e in entries where object[e.name] == nil { object[e.name] = e.value }
        object["exchanges"] = exchanges.map { e -> [String: Any] in
            ["name": e.name, "type": "\(e.kind)", "subscriptions": e.subscriptions, "durable": e.durable, "built_in": e.builtIn,
             "bindings": e.bindings.map { ["queue": $0.queue, "key": $0.key] }]
        }
        object["queues"] = queues.map { q -> [String: Any] in
            ["name": q.name, "exclusive": q.exclusive, "auto_delete": q.autoDelete, "ready": q.ready, "ready_bytes": q.readyBytes,
             "unacked": q.unacked, "consumers": q.consumers, "published": q.published, "delivered": q.delivered,
             "acked": q.acked, "publish_rate": q.publishRate, "deliver_rate": q.deliverRate, "ack_rate": q.ackRate,
             "durable": q.durable, "disk_bytes": q.diskBytes]
        }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}
