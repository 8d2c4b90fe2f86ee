import Evbus
import Foundation

/// `evbus stats --connections`: one row per connection, slow ones first.
enum ConnectionsFormat {
    /// Slow consumers (output full), then paused publishers, then by bytes queued, then by id.
    static func ordered(_ list: [ConnectionSummary]) -> [ConnectionSummary] {
        list.sorted {
            ($0.outputFull ? 0 : 1, $0.paused ? 0 : 1, -Int64($0.bytesQueued), $0.id) < ($1.outputFull ? 0 : 1, $1.paused ? 0 : 1, -Int64($1.bytesQueued), $1.id)
        }
    }

    static func state(_ c: ConnectionSummary) -> String {
        c.outputFull ? "slow" : c.paused ? "paused" : "ok"
    }

    static func table(_ list: [ConnectionSummary]) -> String {
        var rows = [["CONN", "NAME", "UID", "PID", "STATE", "QUEUED", "PUB/S", "DELIVER/S", "UNACKED", "SUBSCRIBES", "CONSUMES"]]
        for c in ordered(list) {
            rows.append([
                "\(c.id)", c.name.isEmpty ? "-" : c.name, "\(c.uid)", "\(c.pid)", state(c), "\(c.bytesQueued)", "\(c.publishRate)",
                "\(c.deliverRate)", "\(c.unacked)", c.subscriptions.isEmpty ? "-" : c.subscriptions.joined(separator: ","),
                c.consumers.isEmpty ? "-" : c.consumers.joined(separator: ","),
            ])
        }
        return StatsCommand.table(rows)
    }

    static func json(_ list: [ConnectionSummary]) -> String {
        let objects = ordered(list).map { c -> [String: Any] in
            ["id": c.id, "name": c.name, "uid": c.uid, "pid": c.pid, "gid": c.gid, "state": state(c), "bytes_queued": c.bytesQueued,
             "published": c.published, "delivered": c.delivered, "publish_rate": c.publishRate, "deliver_rate": c.deliverRate,
             "unacked": c.unacked, "subscriptions": c.subscriptions, "consumers": c.consumers]
        }
        let data = (try? JSONSerialization.data(withJSONObject: ["connections": objects], options: [.sortedKeys])) ?? Data()
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}
