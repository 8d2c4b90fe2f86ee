import Evbus
import EvbusBridge
import EvbusNATS
import EvbusTestSupport
import Foundation
import Testing

/// The bridge when things fail: its NATS node dies (a three-node cluster), NATS is unreachable
/// for a while (buffer or drop), the local broker restarts.
@Suite struct BridgeFaultTests {
    func natsClient(_ url: String, _ name: String) async throws -> NATSClient {
        let c = try NATSClient(NATSClient.Options(servers: [url], name: name))
        try await c.waitUntilConnected()
        return c
    }

    /// Three routed nodes; machine A's bridge on n1, machine B's on n2. Killing n1 moves A's
    /// bridge to another node (one it was told about or learned from n1), and topics and
    /// requests cross again, both ways, in order.
    @Test func aBridgeFailsOverWhenItsNATSNodeDies() async throws {
        let n1 = try await NATSServerProcess(cluster: true, name: "n1")
        let n2 = try await NATSServerProcess(routes: [n1.clusterPort], name: "n2")
        let n3 = try await NATSServerProcess(routes: [n1.clusterPort, n2.clusterPort], name: "n3")
        // Each node routes to the other two before the bridges connect (see NATSClientTests on
        // the server's INFO race).
        #expect(await eventually(30) {
            [n1, n2, n3].allSatisfy { occurrences("Route connection created", in: $0.process.stderr) >= 2 }
        })
        let a = try await BrokerProcess(), b = try await BrokerProcess()
        let bridgeA = try await startBridge(
            "fo-a", socket: a.socketPath, servers: [n1.url, n3.url], export: ["telemetry.#"],
            services: ["export": [["queue": "planner", "subject": "svc.planner"]]])
        let bridgeB = try await startBridge(
            "fo-b", socket: b.socketPath, servers: [n2.url], import: ["telemetry.#"],
            services: ["import": [["subject": "svc.planner", "queue": "planner"]]])
        #expect(bridgeA.stderr.contains("event=nats-connected server=\(n1.url)"))
        let responder = try await Peer.connect(to: a.socketPath, name: "planner")
        _ = try await responder.respond(on: "planner") { (r: Request) -> [UInt8] in Array("plan for \(r.text)".utf8) }
        let subscriber = try await Peer.connect(to: b.socketPath, name: "dashboard")
        let got = Collector<Event>()
        _ = try await subscriber.subscribe("telemetry.#") { got.add($0) }
        let publisher = try await Peer.connect(to: a.socketPath, name: "robot")
        let caller = try await Peer.connect(to: b.socketPath, name: "operator")
        func speeds() -> [String] { got.items.filter { $0.topic == "telemetry.speed" }.map(\.text) }
        /// Interest crosses the cluster asynchronously: probe until one is through.
        func probeUntilThrough(_ topic: String) async -> Bool {
            await eventually(30) {
                try? await publisher.publish(topic, "probe")
                return got.items.contains { $0.topic == topic }
            }
        }

        #expect(await probeUntilThrough("telemetry.before"))
        for i in 0..<20 { try await publisher.publish("telemetry.speed", "\(i)") }
        #expect(await eventually { speeds().count == 20 })
        #expect(speeds() == (0..<20).map(String.init))
        #expect(try await caller.request(to: .queue("planner"), Array("one".utf8), timeout: .seconds(10)).text == "plan for one")

        await n1.kill()
        #expect(await eventually(30) { occurrences("event=nats-connected", in: bridgeA.stderr) >= 2 }, "\(bridgeA.stderr)")
        let moved = bridgeA.stderr.components(separatedBy: "\n").last { $0.contains("event=nats-connected") } ?? ""
        #expect(!moved.contains(n1.url), "\(moved)")

        // After the move: a probe gets through, then 20 more arrive in order; a request crosses again.
        #expect(await probeUntilThrough("telemetry.after"), "\(bridgeA.stderr.suffix(1500))")
        for i in 0..<20 { try await publisher.publish("telemetry.speed", "after-\(i)") }
        #expect(await eventually { speeds().count == 40 })
        #expect(Array(speeds().dropFirst(20)) == (0..<20).map { "after-\($0)" })
        #expect(try await caller.request(to: .queue("planner"), Array("two".utf8), timeout: .seconds(10)).text == "plan for two")

        for p in [bridgeA, bridgeB] { p.signal(SIGTERM) }
        let statusA = await bridgeA.waitForExit(), statusB = await bridgeB.waitForExit()
        #expect(statusA == 0 && statusB == 0)
        for p in [responder, subscriber, publisher, caller] { await p.close() }
        _ = (n2, n3)
    }

    /// The NATS node stops answering without closing anything (SIGSTOP: to the bridge, a
    /// network that went silent, or a wedged server): the keepalive (`nats.pingIntervalMillis`,
    /// `nats.maxPingsOutstanding`) finds the connection stale, the bridge says so and moves to
    /// the next server, and exports flow through it.
    @Test func aBridgeLeavesANATSNodeThatStopsAnswering() async throws {
        let n1 = try await NATSServerProcess(name: "n1"), n2 = try await NATSServerProcess(name: "n2")
        let a = try await BrokerProcess()
        let bridge = try await startBridge(
            "silent", socket: a.socketPath, servers: [n1.url, n2.url], export: ["telemetry.#"],
            nats: ["pingIntervalMillis": 250, "maxPingsOutstanding": 2, "connectTimeoutMillis": 500])
        #expect(bridge.stderr.contains("event=nats-connected server=\(n1.url)"), "\(bridge.stderr)")
        let watcher = try await natsClient(n2.url, "watcher")
        let got = Collector<String>()
        try await watcher.subscribe("evbus.telemetry.>") { got.add(String(decoding: $0.payload, as: UTF8.self)) }
        try await watcher.flush()
        let publisher = try await Peer.connect(to: a.socketPath, name: "robot")

        #expect(await n1.process.stopAndWaitUntilStopped())
        #expect(await eventually(30) { bridge.stderr.contains("event=nats-connected server=\(n2.url)") }, "\(bridge.stderr)")
        #expect(bridge.stderr.contains(
            "event=nats-disconnected server=\(n1.url) reason=\"stale connection: 2 PINGs unanswered (one every 0.25 seconds)\""),
            "\(bridge.stderr)")
        for i in 0..<20 { try await publisher.publish("telemetry.speed", "\(i)") }
        #expect(await eventually { got.count == 20 }, "\(bridge.stderr.suffix(1500))")
        #expect(got.items == (0..<20).map(String.init))

        bridge.signal(SIGTERM)
        #expect(await bridge.waitForExit() == 0)
        await watcher.close()
        await publisher.close()
    }

    /// NATS gone: with `outage.mode` "buffer", exports wait (up to `bufferMessages`, the rest
    /// counted dropped) and go out in order once NATS is back; with "drop" they are counted
    /// dropped. The bridge is stopped (SIGSTOP) while NATS restarts, so the test's subscriber is
    /// on the new server before the bridge sends what it held.
    @Test(arguments: ["buffer", "drop"]) func duringAnOutageExportsWaitOrAreCountedDropped(mode: String) async throws {
        var nats = try await NATSServerProcess()
        let a = try await BrokerProcess()
        let bridge = try await startBridge(
            "outage-\(mode)", socket: a.socketPath, servers: [nats.url], export: ["log.#"],
            outage: ["mode": mode, "bufferMessages": 5])
        let publisher = try await Peer.connect(to: a.socketPath, name: "logger")
        let port = nats.port
        await nats.kill()
        #expect(await eventually { bridge.stderr.contains("event=nats-disconnected") })
        for i in 0..<8 { try await publisher.publish("log.line", "\(i)") }
        try await publisher.flush()
        let statsQueue = "evbus.bridge.outage-\(mode).stats"
        let expected = mode == "buffer" ? "buffered=5 " : "buffered=0 "
        #expect(await eventually {
            let r = try? await RunningProcess.runEvbus(["rpc", statsQueue, "", "--socket", a.socketPath])
            return r?.stdout.contains(expected) == true && r?.stdout.contains(mode == "buffer" ? "dropped=3 " : "dropped=8 ") == true
        })
        bridge.signal(SIGSTOP)
        nats = try await NATSServerProcess(port: port)
        let watcher = try await natsClient(nats.url, "watcher")
        let got = Collector<String>()
        try await watcher.subscribe("evbus.log.>") { got.add(String(decoding: $0.payload, as: UTF8.self)) }
        try await watcher.flush()
        bridge.signal(SIGCONT)
        #expect(await eventually(30) { occurrences("event=nats-connected", in: bridge.stderr) >= 2 })
        try await publisher.publish("log.line", "after")
        #expect(await eventually { got.items.last == "after" }, "\(got.items)")
        #expect(got.items == (mode == "buffer" ? ["0", "1", "2", "3", "4", "after"] : ["after"]))
        bridge.signal(SIGTERM)
        #expect(await bridge.waitForExit() == 0)
        await watcher.close()
        await publisher.close()
    }

    /// A long outage is not a log line every couple of seconds: failed attempts are logged at
    /// the 1st, 2nd, 4th, 8th, …, each saying which; once connected the count starts again.
    @Test func anOutageIsLoggedAtDoublingAttemptsNotAtEachOne() async throws {
        var nats = try await NATSServerProcess()
        let port = nats.port
        let a = try await BrokerProcess()
        let bridge = try await startBridge("quiet", socket: a.socketPath, servers: [nats.url], export: ["log.#"])
        await nats.kill()
        func attempts() -> [Int] {
            bridge.stderr.split(separator: "\n").filter { $0.contains("event=nats-connect-failed") }
                .compactMap { $0.split(separator: " ").first { $0.hasPrefix("attempt=") }.flatMap { Int($0.dropFirst(8)) } }
        }
        // Attempts 1 to 8 take about 5 s (the backoff doubles from 50 ms to 2 s): four lines.
        #expect(await eventually(30) { attempts().contains(8) }, "\(bridge.stderr)")
        #expect(Array(attempts().prefix(4)) == [1, 2, 4, 8], "\(bridge.stderr)")
        nats = try await NATSServerProcess(port: port)
        #expect(await eventually(30) { occurrences("event=nats-connected", in: bridge.stderr) >= 2 })
        let before = attempts().count
        await nats.kill()
        #expect(await eventually(30) { attempts().count > before }, "\(bridge.stderr)")
        #expect(attempts()[before] == 1, "\(bridge.stderr)")
        bridge.signal(SIGTERM)
        #expect(await bridge.waitForExit() == 0)
    }

    /// The local broker restarts under the bridge: it reconnects, subscribes again to what it
    /// exports and declares its service queue again; both directions work after.
    @Test func aBridgeReconnectsAndRedeclaresWhenTheLocalBrokerRestarts() async throws {
        let nats = try await NATSServerProcess()
        let socket = TestPaths.socket("bridge-restart"), data = TestPaths.dataDirectory("bridge-restart")
        var a = try await BrokerProcess(socketPath: socket, dataDir: data)
        let bridge = try await startBridge(
            "restart", socket: socket, servers: [nats.url], export: ["status.#"], import: ["commands.#"])
        let watcher = try await natsClient(nats.url, "watcher")
        let got = Collector<String>()  // "<payload> from <publisher name>": one add per message
        try await watcher.subscribe("evbus.status.>") { m in
            got.add("\(String(decoding: m.payload, as: UTF8.self)) from \(m.headers?[Bridge.Header.publisher].flatMap(RemotePublisher.init(headerValue:))?.name ?? "")")
        }
        try await watcher.flush()
        // A publisher before the restart: the restarted broker numbers connections afresh, so the
        // next publisher may get this one's id; its exports must carry its own identity.
        let before = try await Peer.connect(to: socket, name: "before")
        try await before.publish("status.boot", "up")
        #expect(await eventually { got.items == ["up from before"] }, "\(got.items)")
        await before.close()

        #expect(await a.stop() == 0)
        a = try await BrokerProcess(socketPath: socket, dataDir: data)
        #expect(await eventually(30) { bridge.stderr.contains("event=broker-reconnected") }, "\(bridge.stderr)")

        // Local → NATS: the export subscription was made again.
        let publisher = try await Peer.connect(to: socket, name: "robot")
        try await publisher.publish("status.battery", "80%")
        #expect(await eventually { got.items.count == 2 }, "\(got.items) \(bridge.stderr.suffix(800))")
        #expect(got.items == ["up from before", "80% from robot"])
        // NATS → local: imports still arrive.
        let commands = try await publisher.subscribe("commands.#")
        try await watcher.publish("evbus.commands.stop", Array("stop".utf8))
        var iterator = commands.makeAsyncIterator()
        #expect(try await iterator.next()?.text == "stop")
        bridge.signal(SIGTERM)
        #expect(await bridge.waitForExit() == 0)
        await publisher.close()
        await watcher.close()
        _ = await a.stop()
    }

    /// NATS stops reading (the server is SIGSTOPped): the bridge's connection backs up, the
    /// bridge stops reading from the local broker, and the broker's backpressure holds the local
    /// publisher, with a bounded amount in flight instead of growing memory or dropping. Once
    /// NATS reads again, every message arrives, in order.
    @Test func aStalledNATSHoldsTheLocalPublisherAndLosesNothing() async throws {
        let nats = try await NATSServerProcess()
        let a = try await BrokerProcess()
        let bridge = try await startBridge("stall", socket: a.socketPath, servers: [nats.url], export: ["bulk.#"])
        let watcher = try await natsClient(nats.url, "watcher")
        let got = Collector<UInt32>()
        try await watcher.subscribe("evbus.bulk.>") { m in got.add(m.payload.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }) }
        try await watcher.flush()
        let publisher = try await Peer.connect(to: a.socketPath, name: "camera")
        let total = 768  // 48 MiB: far more than every buffer between publisher and NATS together
        let sent = Collector<Int>()
        nats.process.signal(SIGSTOP)
        let publishing = Task {
            var frame = [UInt8](repeating: 0x61, count: 64 << 10)
            for i in 0..<total {
                frame.withUnsafeMutableBytes { $0.storeBytes(of: UInt32(i), as: UInt32.self) }
                try await publisher.publish("bulk.frame", frame)
                sent.add(i)
            }
        }
        // The publisher is held: its count stays put for 500 ms, well short of the total.
        var held = -1
        for _ in 0..<60 {
            let before = sent.count
            try await Task.sleep(for: .milliseconds(500))
            held = sent.count
            if held == before { break }
        }
        #expect(held < 600, "\(held) frames of 64 KiB published into a NATS server that reads nothing")
        nats.process.signal(SIGCONT)
        try await publishing.value
        #expect(await eventually(60) { got.count == total }, "\(got.count) of \(total)")
        #expect(got.items == (0..<total).map(UInt32.init))
        let stats = try await RunningProcess.runEvbus(["rpc", "evbus.bridge.stall.stats", "", "--socket", a.socketPath])
        #expect(stats.stdout.contains("dropped=0 ") && stats.stdout.contains("exported=\(total) "), "\(stats.stdout)")
        bridge.signal(SIGTERM)
        #expect(await bridge.waitForExit() == 0)
        await watcher.close()
        await publisher.close()
    }

    /// The local broker stops reading (SIGSTOPped) while NATS delivers imports: the bridge's
    /// outbox to it fills, the bridge stops reading from NATS (the server holds the rest, as for
    /// any slow subscriber) instead of growing its own memory, and once the broker reads again
    /// every message arrives, in order.
    @Test func aStalledLocalBrokerPausesImportsAndLosesNothing() async throws {
        let nats = try await NATSServerProcess()
        let b = try await BrokerProcess()
        let bridge = try await startBridge("slow-b", socket: b.socketPath, servers: [nats.url], import: ["bulk.#"])
        let subscriber = try await Peer.connect(to: b.socketPath, name: "recorder")
        let got = Collector<UInt32>()
        _ = try await subscriber.subscribe("bulk.#") { e in got.add(e.payload.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }) }
        let foreign = try await natsClient(nats.url, "camera")
        let total = 512  // 32 MiB: far more than the bridge's outbox (4 MiB) and socket buffers
        let before = try residentBytes(bridge.pid)
        b.process.signal(SIGSTOP)
        var frame = [UInt8](repeating: 0x61, count: 64 << 10)
        for i in 0..<total {
            frame.withUnsafeMutableBytes { $0.storeBytes(of: UInt32(i), as: UInt32.self) }
            try await foreign.publish("evbus.bulk.frame", frame)
        }
        try await foreign.flush()
        try await Task.sleep(for: .milliseconds(500))  // time for the bridge to read all of it, were it not paused
        let grown = try residentBytes(bridge.pid) - before
        b.process.signal(SIGCONT)
        #expect(grown < 16 << 20, "the bridge grew by \(grown >> 20) MiB while its broker read nothing")
        #expect(await eventually(60) { got.count == total }, "\(got.count) of \(total)")
        #expect(got.items == (0..<total).map(UInt32.init))
        let stats = try await RunningProcess.runEvbus(["rpc", "evbus.bridge.slow-b.stats", "", "--socket", b.socketPath])
        #expect(stats.stdout.contains("imported=\(total) ") && stats.stdout.contains("nats_reconnects=0"), "\(stats.stdout)")
        bridge.signal(SIGTERM)
        #expect(await bridge.waitForExit() == 0)
        await foreign.close()
        await subscriber.close()
    }

    private func residentBytes(_ pid: pid_t) throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kib = Int(line.split(separator: " ").dropFirst().first ?? "") else { throw TestSupportError("no VmRSS for \(pid)") }
        return kib << 10
    }
}
