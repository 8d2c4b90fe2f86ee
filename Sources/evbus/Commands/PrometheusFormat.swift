import Evbus

/// The broker's figures in the Prometheus text exposition format (version 0.0.4): for
/// node_exporter's textfile collector or any scraper. Each family gets HELP and TYPE lines before
/// its samples; counters end in `_total`; label values are escaped as the format says.
enum PrometheusFormat {
    /// Gauges among STATS_REPLY's names; every other plain name is a counter.
    static let gauges: Set<String> = [
        "connections", "subscriptions", "exchanges", "queues", "store_healthy", "store_segments", "store_bytes",
        "store_syncs_per_second", "store_messages_per_sync",
    ]

    /// HELP texts for the counters PROTOCOL.md §5.5 lists; an unknown name still gets one.
    static let help: [String: String] = [
        "connections": "Open connections.",
        "connections_total": "Connections accepted since the broker started.",
        "subscriptions": "Live subscriptions.",
        "published": "PUBLISH and PUBLISH_TO frames accepted.",
        "delivered": "DELIVER frames queued to subscribers.",
        "unroutable": "Published messages that reached no queue and no subscription.",
        "dropped": "Deliveries discarded by the drop slow-consumer policy.",
        "slow_consumer_disconnects": "Connections closed by the disconnect slow-consumer policy.",
        "backpressure_pauses": "Times a publisher was paused by the backpressure policy.",
        "protocol_errors": "Connections closed for a protocol violation.",
        "rejected_requests": "Single requests refused with an ERROR.",
        "exchanges": "Exchanges, built-in ones included.",
        "queues": "Queues.",
        "queued": "Messages put into queues (one per queue reached).",
        "acked": "Queue deliveries acknowledged.",
        "returned": "Mandatory messages returned.",
        "rejected_publishes": "Publishes a full reject-publish queue refused.",
        "dead_lettered": "Messages republished to a dead-letter exchange.",
        "expired": "Messages that expired in a queue.",
        "dead_letter_cycles_cut": "Dead letters discarded after 8 hops.",
        "requests_caller_gone": "Requests dropped undelivered because their caller had disconnected.",
        "access_refused": "Operations the access rules refused.",
        "quota_refused": "Connections and requests a uid's quota refused.",
        "store_healthy": "1 while the data directory can be written, 0 after a failed write or sync.",
        "store_segments": "Segment files in the persistence log.",
        "store_bytes": "Bytes in the persistence log's segment files.",
        "store_syncs": "fdatasync calls that covered records.",
        "store_syncs_per_second": "Syncs per second over the last one-second sample.",
        "store_messages_per_sync": "Persistent messages recorded per sync over the last sample.",
        "store_batches": "Batches of records handed to the storage thread.",
        "store_failed_batches": "Batches a failed write or sync lost.",
        "store_persisted": "Persistent messages recorded into durable queues.",
    ]

    struct Family {
        var name: String
        var type: String
        var help: String
        var samples: [(labels: [(String, String)], value: UInt64)] = []
    }

    static func render(_ entries: [StatEntry], _ exchanges: [ExchangeSummary], _ queues: [QueueSummary]) -> String {
        var families: [Family] = []
        var index: [String: Int] = [:]
        func add(_ name: String, _ type: String, _ help: String, _ labels: [(String, String)], _ value: UInt64) {
            if index[name] == nil {
                index[name] = families.count
                families.append(Family(name: name, type: type, help: help))
            }
            families[index[name]!].samples.append((labels, value))
        }
        for e in entries {
            let parts = e.name.split(separator: ".")
            if parts.count == 4, parts[0] == "subscription" {
                // subscription.<connection>.<id>.dropped / .paused
                let what = sanitize(String(parts[3]))
                add("evbus_subscription_\(what)_total", "counter", "Per subscription, what its slow-consumer policy did (\(what)).",
                    [("connection", String(parts[1])), ("subscription", String(parts[2]))], e.value)
                continue
            }
            let base = sanitize(e.name)
            let isGauge = gauges.contains(e.name)
            let name = isGauge || base.hasSuffix("_total") ? "evbus_\(base)" : "evbus_\(base)_total"
            add(name, isGauge ? "gauge" : "counter", help[e.name] ?? "The broker's \(e.name) counter (PROTOCOL.md, STATS).", [], e.value)
        }
        for q in queues {
            let l = [("queue", q.name)]
            add("evbus_queue_ready", "gauge", "Messages ready in the queue.", l, UInt64(q.ready))
            add("evbus_queue_ready_bytes", "gauge", "Payload bytes ready in the queue.", l, q.readyBytes)
            add("evbus_queue_unacked", "gauge", "Messages delivered and not yet acknowledged.", l, UInt64(q.unacked))
            add("evbus_queue_consumers", "gauge", "Consumers of the queue.", l, UInt64(q.consumers))
            add("evbus_queue_published_total", "counter", "Messages put into the queue.", l, q.published)
            add("evbus_queue_delivered_total", "counter", "Messages the queue delivered.", l, q.delivered)
            add("evbus_queue_acked_total", "counter", "Deliveries of the queue acknowledged.", l, q.acked)
            add("evbus_queue_durable", "gauge", "1 for a durable queue.", l, q.durable ? 1 : 0)
            add("evbus_queue_disk_bytes", "gauge", "Bytes of the queue's persistent messages in the log.", l, q.diskBytes)
        }
        for e in exchanges {
            let l = [("exchange", e.name), ("type", "\(e.kind)")]
            add("evbus_exchange_bindings", "gauge", "Queue bindings of the exchange.", l, UInt64(e.bindings.count))
            add("evbus_exchange_subscriptions", "gauge", "Plain subscriptions bound to the exchange.", l, UInt64(e.subscriptions))
        }
        var out = ""
        for f in families {
            out += "# HELP \(f.name) \(escapeHelp(f.help))\n# TYPE \(f.name) \(f.type)\n"
            for s in f.samples {
                let labels = s.labels.isEmpty ? "" : "{" + s.labels.map { "\($0.0)=\"\(escapeLabel($0.1))\"" }.joined(separator: ",") + "}"
                out += "\(f.name)\(labels) \(s.value)\n"
            }
        }
        return out
    }

    /// A metric name part: letters, digits and `_` only.
    static func sanitize(_ s: String) -> String {
        String(s.unicodeScalars.map { (("0"..."9").contains($0) || ("a"..."z").contains($0) || ("A"..."Z").contains($0) || $0 == "_") ? Character($0) : "_" })
    }

    static func escapeLabel(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }

    static func escapeHelp(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }
}
