import Evbus
import EvbusTestSupport
import Foundation
import Testing

/// `evbus stats --connections` and CONNECTIONS: who is connected and what each is doing.
@Suite struct ConnectionsTests {
    func json(_ text: String) throws -> [[String: Any]] {
        let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        return try #require(object?["connections"] as? [[String: Any]])
    }

    @Test func eachConnectionShowsWhoItIsWhatItDoesAndWhatWaitsForIt() async throws {
        let broker = try await BrokerProcess()
        let thermostat = try await Peer.connect(to: broker.socketPath, name: "thermostat")
        _ = try await thermostat.subscribe("sensors.#")
        _ = try await thermostat.declareQueue("jobs")
        let consumer = try await thermostat.consume("jobs", ack: .manual, prefetch: 10) { _ in }  // never acks
        // A client that stops reading: what the broker holds for it grows.
        let stalled = try RawClient.handshaken(broker.socketPath, name: "stalled")
        stalled.send(.subscribe(subscriptionID: 1, pattern: "flood"))
        _ = try stalled.readFrame()
        let publisher = try await Peer.connect(to: broker.socketPath, name: "publisher")
        for i in 0..<5 { try await publisher.publish(to: "", key: "jobs", Array("job \(i)".utf8)) }
        for _ in 0..<20 { try await publisher.publish("flood", [UInt8](repeating: 1, count: 60_000)) }
        try await publisher.flush()

        var rows: [[String: Any]] = []
        #expect(await eventually {
            let run = try? await RunningProcess.runEvbus(["stats", "--connections", "--json", "--socket", broker.socketPath])
            rows = (try? json(run?.stdout ?? "")) ?? []
            let t = rows.first { $0["name"] as? String == "thermostat" }
            return (t?["unacked"] as? Int) == 5
        })
        let byName = Dictionary(rows.map { ($0["name"] as? String ?? "", $0) }, uniquingKeysWith: { a, _ in a })
        let t = try #require(byName["thermostat"])
        #expect(t["uid"] as? Int == Int(getuid()) && t["pid"] as? Int == Int(getpid()))
        #expect(t["subscriptions"] as? [String] == ["sensors.#"] && t["consumers"] as? [String] == ["jobs"])
        #expect((t["delivered"] as? Int ?? 0) >= 5)
        #expect((byName["publisher"]?["published"] as? Int ?? 0) == 25)
        let s = try #require(byName["stalled"])
        #expect((s["bytes_queued"] as? Int ?? 0) > 0 && s["subscriptions"] as? [String] == ["flood"])
        #expect(rows.first?["name"] as? String == "stalled", "the connection with work waiting comes first: \(rows.map { $0["name"] ?? "" })")

        let table = try await RunningProcess.runEvbus(["stats", "--connections", "--socket", broker.socketPath])
        #expect(table.status == 0)
        let lines = table.stdout.split(separator: "\n")
        #expect(lines.first?.hasPrefix("CONN") == true && lines.contains { $0.contains("thermostat") && $0.contains("sensors.#") && $0.contains("jobs") })

        try await thermostat.cancel(consumer)
        for p in [thermostat, publisher] { await p.close() }
        withExtendedLifetime(stalled) {}
    }

    @Test func underAccessRulesAUserSeesOnlyTheirOwnConnections() async throws {
        let config = TestPaths.dataDirectory("conns") + ".json"
        try """
            {"socketMode": "0666", "access": [
              {"uid": \(OtherUser.uid), "subscribe": ["#"]},
              {"uid": 0, "configure": ["#"], "publish": ["#"], "publishTo": {"#": ["#"]}, "subscribe": ["#"], "consume": ["#"], "request": ["#"], "respond": ["#"]}
            ]}
            """.write(toFile: config, atomically: true, encoding: .utf8)
        defer { unlink(config) }
        let broker = try await BrokerProcess(arguments: ["--config", config])
        let mine = try await Peer.connect(to: broker.socketPath, name: "root-peer")
        let other = try await OtherUser.run(["stats", "--connections", "--json", "--socket", broker.socketPath])
        #expect(other.status == 0, "\(other.stderr)")
        let seen = try json(other.stdout)
        #expect(seen.count == 1 && seen[0]["uid"] as? Int == Int(OtherUser.uid), "\(other.stdout)")  // itself, not root's
        let all = try await mine.connections()
        #expect(all.contains { $0.name == "root-peer" })
        await mine.close()
    }

    @Test func prometheusAndConnectionsDoNotMix() async throws {
        let run = try await RunningProcess.runEvbus(["stats", "--connections", "--format", "prometheus"])
        #expect(run.status == 64 && run.stderr.contains("--connections prints a table or JSON"), "\(run.stderr)")
    }
}
