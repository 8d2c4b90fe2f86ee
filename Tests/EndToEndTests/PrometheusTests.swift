import Evbus
import EvbusTestSupport
import Foundation
import Testing
@testable import evbus

/// `evbus stats --format prometheus` against the text exposition format's rules, line by line.
@Suite struct PrometheusTests {
    struct Violation: Error, CustomStringConvertible { var description: String }

    static var metricName: Regex<Substring> { /[a-zA-Z_:][a-zA-Z0-9_:]*/ }
    static var labelName: Regex<Substring> { /[a-zA-Z_][a-zA-Z0-9_]*/ }

    /// Checks `text` against the format (version 0.0.4) and returns each sample's value by its
    /// name with labels, as written.
    func validate(_ text: String) throws -> [String: Double] {
        guard text.hasSuffix("\n") else { throw Violation(description: "the output does not end with a newline") }
        var help: Set<String> = [], type: [String: String] = [:], finished: Set<String> = [], samples: [String: Double] = [:]
        var current: String?
        for (n, line) in text.dropLast().split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            func fail(_ why: String) -> Violation { Violation(description: "line \(n + 1) \"\(line)\": \(why)") }
            if line.hasPrefix("#") {
                let words = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false).map(String.init)
                guard words.count >= 3, words[0] == "#", ["HELP", "TYPE"].contains(words[1]) else { throw fail("a comment that is neither HELP nor TYPE") }
                let name = words[2]
                guard name.wholeMatch(of: Self.metricName) != nil else { throw fail("bad metric name") }
                guard !finished.contains(name), samples.keys.allSatisfy({ !$0.hasPrefix(name + "{") && $0 != name }) else {
                    throw fail("\(words[1]) after the family's samples")
                }
                if words[1] == "HELP" {
                    guard help.insert(name).inserted else { throw fail("a second HELP") }
                    guard words.count == 4, !words[3].isEmpty else { throw fail("HELP without text") }
                } else {
                    guard type[name] == nil else { throw fail("a second TYPE") }
                    guard words.count == 4, ["counter", "gauge", "histogram", "summary", "untyped"].contains(words[3]) else { throw fail("bad type") }
                    type[name] = words[3]
                }
                continue
            }
            guard !line.isEmpty else { throw fail("an empty line") }
            // name{labels} value
            let nameEnd = line.firstIndex { $0 == "{" || $0 == " " } ?? line.endIndex
            let name = String(line[..<nameEnd])
            guard name.wholeMatch(of: Self.metricName) != nil else { throw fail("bad metric name") }
            guard let family = type[name] else { throw fail("a sample before its TYPE") }
            guard help.contains(name) else { throw fail("a sample without HELP") }
            if family == "counter" && !name.hasSuffix("_total") { throw fail("a counter not named _total") }
            if current != name {
                guard !finished.contains(name) else { throw fail("the family's samples are not together") }
                if let current { finished.insert(current) }
                current = name
            }
            var rest = line[nameEnd...]
            var key = name
            if rest.first == "{" {
                guard let close = try labelsEnd(rest) else { throw fail("unterminated labels") }
                let labels = rest[rest.index(after: rest.startIndex)..<close]
                try checkLabels(String(labels), fail)
                key += "{" + labels + "}"
                rest = rest[rest.index(after: close)...]
            }
            guard rest.first == " ", let value = Double(rest.dropFirst()) else { throw fail("no numeric value") }
            guard samples.updateValue(value, forKey: key) == nil else { throw fail("the same series twice") }
        }
        return samples
    }

    /// The index of the `}` closing a label set, skipping escaped characters in quoted values.
    func labelsEnd(_ s: Substring) throws -> Substring.Index? {
        var inQuotes = false, escaped = false
        for i in s.indices {
            let c = s[i]
            if escaped { escaped = false; continue }
            if inQuotes && c == "\\" { escaped = true; continue }
            if c == "\"" { inQuotes.toggle(); continue }
            if c == "}" && !inQuotes { return i }
        }
        return nil
    }

    func checkLabels(_ s: String, _ fail: (String) -> Violation) throws {
        var rest = Substring(s)
        var names: Set<String> = []
        while !rest.isEmpty {
            guard let eq = rest.firstIndex(of: "=") else { throw fail("a label without =") }
            let name = String(rest[..<eq])
            guard name.wholeMatch(of: Self.labelName) != nil, !name.hasPrefix("__"), names.insert(name).inserted else { throw fail("bad label name \(name)") }
            rest = rest[rest.index(after: eq)...]
            guard rest.first == "\"" else { throw fail("an unquoted label value") }
            rest = rest.dropFirst()
            var closed = false
            while let c = rest.first {
                rest = rest.dropFirst()
                if c == "\\" {
                    guard let e = rest.first, ["\\", "\"", "n"].contains(e) else { throw fail("a bad escape in a label value") }
                    rest = rest.dropFirst()
                } else if c == "\"" {
                    closed = true
                    break
                } else if c == "\n" {
                    throw fail("a raw newline in a label value")
                }
            }
            guard closed else { throw fail("an unterminated label value") }
            if rest.first == "," { rest = rest.dropFirst() } else if !rest.isEmpty { throw fail("labels not separated by commas") }
        }
    }

    @Test func theOutputFollowsTheFormatAndCarriesTheFigures() async throws {
        let broker = try await BrokerProcess()
        let peer = try await Peer.connect(to: broker.socketPath, name: "metrics")
        _ = try await peer.declareQueue("jobs")
        let odd = "odd.queue:1"
        _ = try await peer.declareQueue(odd)
        try await peer.declareExchange("orders", kind: .direct)
        try await peer.bind(queue: "jobs", exchange: "orders", key: "new")
        for i in 0..<3 { try await peer.publish(to: "", key: "jobs", Array("job \(i)".utf8)) }
        try await peer.publish(to: "", key: odd, Array("x".utf8))
        try await peer.flush()
        let run = try await RunningProcess.runEvbus(["stats", "--format", "prometheus", "--socket", broker.socketPath])
        #expect(run.status == 0, "\(run.stderr)")
        let samples: [String: Double]
        do { samples = try validate(run.stdout) } catch {
            Issue.record("\(error)\n\(run.stdout)")
            return
        }
        #expect(samples[#"evbus_queue_ready{queue="jobs"}"#] == 3)
        #expect(samples[#"evbus_queue_ready{queue="odd.queue:1"}"#] == 1)
        #expect(samples[#"evbus_exchange_bindings{exchange="orders",type="direct"}"#] == 1)
        #expect((samples["evbus_connections"] ?? 0) >= 1)
        #expect((samples["evbus_published_total"] ?? 0) >= 4)
        #expect(samples["evbus_connections_total"] != nil && samples["evbus_connections_total_total"] == nil)
        await peer.close()
    }

    @Test func theValidatorRefusesWhatTheFormatForbids() throws {
        let good = "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n"
        _ = try validate(good)
        for bad in [
            "a_total 1\n",                                                     // no TYPE
            "# HELP a A.\n# TYPE a counter\na 1\n",                            // counter without _total
            "# HELP g G.\n# TYPE g gauge\ng{x=\"1\"} 1\n# HELP h H.\n# TYPE h gauge\nh 1\ng{x=\"2\"} 2\n",  // not together
            "# HELP g G.\n# TYPE g gauge\ng{x=\"a\\q\"} 1\n",                 // bad escape
            "# HELP g G.\n# TYPE g gauge\ng one\n",                            // not a number
            "# HELP g G.\n# TYPE g gauge\ng 1",                                // no final newline
        ] {
            #expect(throws: Violation.self, "\(bad)") { _ = try validate(bad) }
        }
    }

    @Test func labelValuesAndHelpAreEscaped() throws {
        // Broker names cannot hold these characters today; the format must still survive them.
        let text = PrometheusFormat.render(
            [StatEntry("subscription.7.3.dropped", 2), StatEntry("brand.new-counter", 1)], [],
            [QueueSummary(name: "a\"b\\c\nd", exclusive: false, autoDelete: false, ready: 1, readyBytes: 1, unacked: 0, consumers: 0,
                          published: 1, delivered: 0, acked: 0, publishRate: 0, deliverRate: 0, ackRate: 0, durable: false, diskBytes: 0)])
        let samples = try validate(text)
        #expect(samples[#"evbus_queue_ready{queue="a\"b\\c\nd"}"#] == 1)
        #expect(samples[#"evbus_subscription_dropped_total{connection="7",subscription="3"}"#] == 2)
        #expect(samples["evbus_brand_new_counter_total"] == 1)
    }

    @Test func aWrongFormatIsRefused() async throws {
        let run = try await RunningProcess.runEvbus(["stats", "--format", "xml"])
        #expect(run.status == 64 && run.stderr.contains("expected table, json or prometheus"), "\(run.stderr)")
    }
}
