import Evbus
import EvbusIO
import EvbusTestSupport
import Foundation
import Testing

/// Waits until the broker reports `n` subscriptions (so a `sub` process is ready before publishing,
/// or a killed one has been cleaned up).
func waitForSubscriptions(_ n: UInt64, at socket: String, exactly: Bool = false) async throws -> Bool {
    let probe = try await Peer.connect(to: socket, name: "probe")
    defer { Task { await probe.close() } }
    return await eventually {
        let stats = (try? await probe.brokerStats()) ?? []
        let count = stats.first { $0.name == "subscriptions" }?.value ?? 0
        return exactly ? count == n : count >= n
    }
}

/// The real `evbus` binary: broker, pub, sub and stats as a user runs them.
@Suite struct CLIEndToEndTests {
    @Test func pubToSubThroughTheBrokerProcess() async throws {
        let broker = try await BrokerProcess()
        let sub = try RunningProcess.evbus(["sub", "sensors.*.temp", "--count", "2", "--socket", broker.socketPath])
        #expect(try await waitForSubscriptions(1, at: broker.socketPath))
        let r1 = try await RunningProcess.runEvbus(["pub", "sensors.kitchen.temp", "21.5", "--socket", broker.socketPath])
        #expect(r1.status == 0, "\(r1.stderr)")
        _ = try await RunningProcess.runEvbus(["pub", "sensors.kitchen.humidity", "40", "--socket", broker.socketPath])
        _ = try await RunningProcess.runEvbus(["pub", "sensors.hall.temp", "multi\tline\nvalue", "--socket", broker.socketPath])
        #expect(await sub.waitForExit() == 0)
        #expect(sub.stdoutLines == ["sensors.kitchen.temp\t21.5", "sensors.hall.temp\tmulti\\tline\\nvalue"])
        #expect(await broker.stop() == 0)
    }

    @Test func pubReadsLinesFromStdinAndSubPrintsJSON() async throws {
        let broker = try await BrokerProcess()
        let sub = try RunningProcess.evbus(["sub", "logs.#", "--json", "--count", "3", "--socket", broker.socketPath])
        #expect(try await waitForSubscriptions(1, at: broker.socketPath))
        let r = try await RunningProcess.runEvbus(["pub", "logs.app", "--socket", broker.socketPath], stdin: "one\ntwo \"quoted\"\nthree\n")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(await sub.waitForExit() == 0)
        let lines = sub.stdoutLines
        #expect(lines.count == 3)
        let decoded = try lines.map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        #expect(decoded.map { $0["payload"] as? String } == ["one", "two \"quoted\"", "three"])
        #expect(decoded.allSatisfy { $0["topic"] as? String == "logs.app" && $0["publisher"] is NSNumber })
        await broker.stop()
    }

    @Test func overlappingSubscribersAndOneThatDisconnectsMidStream() async throws {
        let broker = try await BrokerProcess()
        let socket = broker.socketPath
        let all = try RunningProcess.evbus(["sub", "orders.#", "--count", "20", "--socket", socket])
        let eu = try RunningProcess.evbus(["sub", "orders.eu.*", "--count", "10", "--socket", socket])
        let quitter = try RunningProcess.evbus(["sub", "orders.#", "--socket", socket])
        #expect(try await waitForSubscriptions(3, at: socket))
        let pub = try await Peer.connect(to: socket, name: "shop")
        for i in 0..<5 { try await pub.publish("orders.eu.new", "eu-\(i)") }
        try await pub.flush()
        #expect(await eventually { quitter.stdoutLines.count == 5 })
        quitter.signal(SIGKILL)  // gone mid-stream, without saying goodbye
        await quitter.waitForExit()
        #expect(try await waitForSubscriptions(2, at: socket, exactly: true))  // its subscription is gone
        for i in 5..<10 { try await pub.publish("orders.eu.new", "eu-\(i)") }
        for i in 0..<10 { try await pub.publish("orders.us.new", "us-\(i)") }
        try await pub.flush()
        #expect(await all.waitForExit() == 0)
        #expect(await eu.waitForExit() == 0)
        #expect(all.stdoutLines.count == 20)
        #expect(eu.stdoutLines == (0..<10).map { "orders.eu.new\teu-\($0)" })
        await pub.close()
        await broker.stop()
    }

    @Test func statsPrintsCountersAsTableAndJSON() async throws {
        let broker = try await BrokerProcess()
        _ = try await RunningProcess.runEvbus(["pub", "x", "y", "--socket", broker.socketPath])
        let table = try await RunningProcess.runEvbus(["stats", "--socket", broker.socketPath])
        #expect(table.status == 0)
        #expect(table.stdout.contains("published"))
        let json = try await RunningProcess.runEvbus(["stats", "--json", "--socket", broker.socketPath])
        let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
        #expect((object?["published"] as? NSNumber)?.intValue == 1)
        await broker.stop()
    }

    @Test func socketPathComesFromTheEnvironment() async throws {
        let broker = try await BrokerProcess()
        let r = try await RunningProcess.runEvbus(["stats"], environment: ["EVBUS_SOCKET": broker.socketPath])
        #expect(r.status == 0, "\(r.stderr)")
        let dir = TestPaths.file("xdg")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let xdg = try await BrokerProcess(socketPath: dir + "/evbus.sock")
        let r2 = try await RunningProcess.runEvbus(["stats"], environment: ["EVBUS_SOCKET": "", "XDG_RUNTIME_DIR": dir])
        #expect(r2.status == 0, "\(r2.stderr)")
        await xdg.stop()
        await broker.stop()
    }
}

@Suite struct BrokerProcessTests {
    @Test func sigtermStopsCleanlyAndRemovesTheSocket() async throws {
        let broker = try await BrokerProcess()
        let sub = try RunningProcess.evbus(["sub", "t", "--no-reconnect", "--socket", broker.socketPath])
        #expect(try await waitForSubscriptions(1, at: broker.socketPath))
        #expect(await broker.stop() == 0)
        #expect(access(broker.socketPath, F_OK) != 0)
        #expect(broker.process.stderr.contains("SIGTERM received"))
        // The subscriber is told, and (told not to wait for a new broker) exits non-zero with the reason.
        #expect(await sub.waitForExit() == 1)
        #expect(sub.stderr.contains("shutting down"))
    }

    @Test func sigintStopsToo() async throws {
        let broker = try await BrokerProcess()
        broker.process.signal(SIGINT)
        #expect(await broker.process.waitForExit() == 0)
        #expect(access(broker.socketPath, F_OK) != 0)
    }

    /// The signal handlers exist before the socket does: a SIGTERM sent the moment the broker
    /// listens is never lost (it was, when they were installed only after the broker started).
    @Test func aSigtermTheMomentTheSocketAppearsStopsTheBroker() async throws {
        for _ in 0..<10 {
            let broker = try await BrokerProcess()
            broker.process.signal(SIGTERM)
            #expect(await broker.process.waitForExit(seconds: 10) == 0)
            #expect(!broker.process.isRunning)
            if broker.process.isRunning { broker.process.signal(SIGKILL) }
        }
    }

    @Test func refusesToStartOverALiveBroker() async throws {
        let broker = try await BrokerProcess()
        let second = try await RunningProcess.runEvbus(["broker", "--socket", broker.socketPath])
        #expect(second.status == 1)
        #expect(second.stderr.contains("another broker is already listening on \(broker.socketPath)"))
        #expect(UnixSocket.isLive(path: broker.socketPath))
        await broker.stop()
    }

    @Test func refusesToStartOnADataDirectoryAnotherBrokerUses() async throws {
        let broker = try await BrokerProcess()
        let second = try await RunningProcess.runEvbus(["broker", "--socket", TestPaths.socket(), "--data-dir", broker.dataDir])
        #expect(second.status == 1)
        #expect(second.stderr.contains("data directory \(broker.dataDir) is in use by another broker"), "\(second.stderr)")
        // The first one is untouched.
        let r = try await RunningProcess.runEvbus(["declare", "queue", "still_here", "--durable", "--socket", broker.socketPath])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(await broker.stop() == 0)
    }

    @Test func durableCLIRoundTripAcrossARestart() async throws {
        let broker = try await BrokerProcess()
        let s = broker.socketPath
        #expect(try await RunningProcess.runEvbus(["declare", "queue", "jobs", "--durable", "--socket", s]).status == 0)
        let pub = try await RunningProcess.runEvbus(["pub", "--exchange", "", "--key", "jobs", "--persistent", "--confirm", "job 1", "--socket", s])
        #expect(pub.status == 0, "\(pub.stderr)")
        let stats = try await RunningProcess.runEvbus(["stats", "--socket", s])
        #expect(stats.stdout.contains("durable") && stats.stdout.contains("store_persisted"), "\(stats.stdout)")
        #expect(await broker.stop() == 0)
        let again = try await BrokerProcess(socketPath: s, dataDir: broker.dataDir)
        let got = try await RunningProcess.runEvbus(["consume", "jobs", "--count", "1", "--socket", s])
        #expect(got.status == 0 && got.stdout.contains("job 1"), "\(got.stdout) \(got.stderr)")
        #expect(await again.stop() == 0)
    }

    @Test func replacesAStaleSocketFile() async throws {
        let path = TestPaths.socket("stale-e2e")
        let fd = try UnixSocket.listen(path: path, mode: 0o600)
        close(fd)
        let broker = try await BrokerProcess(socketPath: path)
        #expect(broker.process.stderr.contains("replaced stale socket file"))
        await broker.stop()
    }

    @Test func aBadConfigFileFailsAtStartNamingTheKey() async throws {
        let file = TestPaths.file("bad", ".json")
        try Data(#"{"slowConsumerPolicy": "panic"}"#.utf8).write(to: URL(fileURLWithPath: file))
        defer { unlink(file) }
        let r = try await RunningProcess.runEvbus(["broker", "--config", file, "--socket", TestPaths.socket()])
        #expect(r.status == 78)
        #expect(r.stderr.contains("at 'slowConsumerPolicy'"))
        #expect(r.stderr.contains(file))
    }

    @Test func startsFromEachShippedConfig() async throws {
        let configs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Configs")
        // Every broker config; bridge.json is the bridge's (BridgeTests starts bridges from configs).
        for file in try FileManager.default.contentsOfDirectory(atPath: configs.path) where file.hasSuffix(".json") && file != "bridge.json" {
            let broker = try await BrokerProcess(arguments: ["--config", configs.appendingPathComponent(file).path])
            let r = try await RunningProcess.runEvbus(["pub", "a", "b", "--socket", broker.socketPath])
            #expect(r.status == 0, "\(file): \(r.stderr)")
            #expect(await broker.stop() == 0)
        }
    }
}
