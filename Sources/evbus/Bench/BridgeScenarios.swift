import Evbus
import EvbusBridge
import EvbusIO
import EvbusNATS
import Foundation
import Synchronization

/// `evbus bench --scenario bridge`: two brokers standing for two machines, each with a bridge to
/// one NATS server, measured beside plain NATS clients doing the same through the same server in
/// the same sitting. Throughput (machine A's publisher to machine B's subscriber, and each half
/// alone), one-way latency paced at 1,000 msgs/s, and sequential request/reply round trips from B to a responder on A.
enum BridgeScenarios {
    static let subjectPrefix = "evbus"

    /// The report's lines, and how many messages were lost on the way.
    static func run(natsAddress: String?, messages: Int?) async throws -> (lines: [String], lost: Int) {
        let server = try natsAddress == nil ? BenchNATSServer() : nil
        defer { server?.stop() }
        let address = natsAddress ?? server!.address
        let brokerA = try BenchBroker(), brokerB = try BenchBroker()
        defer {
            brokerA.stop()
            brokerB.stop()
        }
        let tag = "\(getpid())"
        let bridgeA = try bridge(named: "a\(tag)", socket: brokerA.socketPath, nats: address, """
            "export": ["bench.bridge.#", "bench.export.#"], "services": {"export": [{"queue": "bench.bridge.rpc", "subject": "svc.bench.\(tag)"}]}
            """)
        let bridgeB = try bridge(named: "b\(tag)", socket: brokerB.socketPath, nats: address, """
            "import": ["bench.bridge.#"], "services": {"import": [{"subject": "svc.bench.\(tag)", "queue": "bench.bridge.rpc"},
                                                                 {"subject": "bench.rpc.\(tag)", "queue": "bench.bridge.rpc-nats"}]}
            """)
        try await bridgeA.start()
        try await bridgeB.start()
        var lines = ["evbus bench bridge: brokers pid \(brokerA.pid) (A) and \(brokerB.pid) (B), NATS at \(address)\(server.map { " (nats-server pid \($0.pid))" } ?? "")"]

        let count = messages ?? 500_000
        // The CPU each part spends per message says what a ratio of rates cannot: where the
        // bridge's path costs more than NATS's own, and what it could at best come down to.
        let cpu = { BridgeCPU.sample(brokers: [brokerA.pid, brokerB.pid], natsServer: server?.pid) }
        let beforeBridge = cpu()
        let viaBridge = try await throughput(from: brokerA.socketPath, to: brokerB.socketPath, messages: count, paced: nil)
        let beforePlain = cpu()
        let plain = try await NATSBench.pubsub(address, name: "pubsub", messages: count, size: 16, subscribers: 1)
        let afterPlain = cpu()
        lines += [viaBridge.line, plain.line, ratio("throughput bridge/nats", BenchReport.rate(viaBridge.messages, nanos: viaBridge.nanos), BenchReport.rate(plain.messages, nanos: plain.nanos)),
                  (beforePlain - beforeBridge).line("bridge A->NATS->B", messages: count), (afterPlain - beforePlain).line("nats pubsub", messages: count)]

        // Each half alone: where the time goes.
        let exportHalf = try await exportOnly(from: brokerA.socketPath, nats: address, messages: count)
        let importHalf = try await importOnly(nats: address, to: brokerB.socketPath, messages: count)
        lines += [exportHalf.line, importHalf.line]

        // Paced slowly enough that the publisher sleeps between messages: on a small machine a
        // publisher spinning on a core would stand between the bridge's threads and the CPU.
        let paced = min(count, 5_000)
        let bridgeLatency = try await throughput(from: brokerA.socketPath, to: brokerB.socketPath, messages: paced, paced: 1_000)
        let plainLatency = try await NATSBench.pubsub(address, name: "latency@1k", messages: paced, size: 16, subscribers: 1, pacedPerSecond: 1_000)
        lines += [bridgeLatency.line, plainLatency.line,
                  ratio("one-way p50 bridge/nats", Double(BenchReport.percentile(bridgeLatency.latencies, 50)), Double(BenchReport.percentile(plainLatency.latencies, 50)))]

        let calls = min(count, 20_000)
        let responder = try await natsEchoResponder(address, subject: "bench.rpc.\(tag)")
        let (serverLoop, clientLoop) = try loops()
        let responderPeer = try await Peer.connect(to: brokerA.socketPath, name: "bench-responder", loop: serverLoop)
        let echo = try await responderPeer.respond(on: "bench.bridge.rpc", prefetch: 64) { (request: Request) -> [UInt8] in request.payload }
        let callerA = try await Peer.connect(to: brokerA.socketPath, name: "bench-client", loop: clientLoop)
        let callerB = try await Peer.connect(to: brokerB.socketPath, name: "bench-client", loop: clientLoop)
        let natsCaller = try await NATSBench.connect(address, name: "bench-client")
        // The whole way (B → NATS → A and back), each bridge alone, and the parts no bridge can
        // remove: NATS's own round trip and an evbus one.
        let bridgeRTT = try await roundTrips("bridge rpc B->A", callerB, calls: calls) { p, payload in _ = try await p.request(to: .queue("bench.bridge.rpc"), payload) }
        let exported = try await roundTrips("bridge rpc NATS->A", natsCaller, calls: calls) { c, payload in _ = try await c.request("svc.bench.\(tag)", payload) }
        let imported = try await roundTrips("bridge rpc B->NATS", callerB, calls: calls) { p, payload in _ = try await p.request(to: .queue("bench.bridge.rpc-nats"), payload) }
        let plainRTT = try await roundTrips("nats rpc", natsCaller, calls: calls) { c, payload in _ = try await c.request("bench.rpc.\(tag)", payload) }
        let evbusRTT = try await roundTrips("evbus rpc (on A)", callerA, calls: calls) { p, payload in _ = try await p.request(to: .queue("bench.bridge.rpc"), payload) }
        try await echo.cancel()
        for p in [callerA, callerB, responderPeer] { await p.close() }
        await natsCaller.close()
        await responder.close()
        stop(serverLoop, clientLoop)
        func p50(_ r: (latencies: [UInt64], line: String)) -> Double { Double(BenchReport.percentile(r.latencies, 50)) }
        lines += [bridgeRTT.line, exported.line, imported.line, plainRTT.line, evbusRTT.line,
                  ratio("round trip p50 bridge/nats", p50(bridgeRTT), p50(plainRTT)),
                  ratio("floor (nats+2 evbus)/nats", p50(plainRTT) + 2 * p50(evbusRTT), p50(plainRTT))]

        let counters = (bridgeA.counters, bridgeB.counters)
        await bridgeA.stop()
        await bridgeB.stop()
        lines.append("bridge counters: A \(counters.0)  B \(counters.1)")
        let lost = [viaBridge, plain, exportHalf, importHalf, bridgeLatency, plainLatency].reduce(0) { $0 + $1.lost }
        return (lines, lost)
    }

    private static func ratio(_ label: String, _ a: Double, _ b: Double) -> String {
        "\(label.padding(toLength: 30, withPad: " ", startingAt: 0)) \(BenchReport.format(b == 0 ? 0 : a / b, 2))"
    }

    private static func bridge(named name: String, socket: String, nats: String, _ rules: String) throws -> Bridge {
        let url = nats.hasPrefix("nats://") ? nats : "nats://" + nats
        let json = #"{"name": "\#(name)", "socket": "\#(socket)", "nats": {"servers": ["\#(url)"]}, "prefix": "\#(subjectPrefix)", "#
            + rules + "}"
        return Bridge(config: try BridgeConfig.parse(Data(json.utf8))) { line in
            if line.contains("event=nats-disconnected") || line.contains("failed") { Terminal.err("bridge \(name): \(line)\n") }
        }
    }

    /// Machine A's publisher to machine B's subscriber, through both bridges and NATS.
    private static func throughput(from a: String, to b: String, messages: Int, paced: Int?) async throws -> BenchResult {
        let topic = "bench.bridge.\(paced == nil ? "data" : "paced")"
        let (pubLoop, subLoop) = try loops()
        defer { stop(pubLoop, subLoop) }
        let receiver = Receiver()
        let subscriber = try await Peer.connect(to: b, name: "bench-sub", loop: subLoop)
        _ = try await subscriber.subscribeViews(topic) { receiver.handle($0) }
        let publisher = try await Peer.connect(to: a, name: "bench-pub", loop: pubLoop)
        // The import subscription is on NATS before the bridges report started; one message
        // through proves the whole path is up (the count below starts after it).
        let warm = Receiver()
        _ = try await subscriber.subscribeViews("bench.bridge.warm") { warm.handle($0) }
        try await publisher.publish("bench.bridge.warm", [UInt8](repeating: 0, count: 16))
        guard await warm.waitFor(1) > 0, warm.count.load(ordering: .acquiring) == 1 else { throw BenchError("nothing crossed the bridge") }
        let start = monotonicNanos()
        try await Publisher.run(publisher, topic: topic, count: messages, size: 16, stampEvery: paced == nil ? 64 : 1, pacedPerSecond: paced)
        let end = await receiver.waitFor(messages)
        await publisher.close()
        await subscriber.close()
        return BenchResult(
            name: paced.map { "bridge latency@\($0 / 1000)k" } ?? "bridge A->NATS->B", messages: messages, deliveries: messages,
            received: receiver.count.load(ordering: .acquiring), nanos: end - start, latencies: receiver.sortedLatencies(),
            outOfOrder: receiver.outOfOrder.load(ordering: .relaxed))
    }

    /// Machine A's publisher to a plain NATS subscriber: bridge A's export alone.
    private static func exportOnly(from a: String, nats: String, messages: Int) async throws -> BenchResult {
        let receiver = Receiver()
        let (pubLoop, subLoop) = try loops()
        defer { stop(pubLoop, subLoop) }
        let subscriber = try await NATSBench.subscriber(nats, "\(subjectPrefix).bench.export.data", receiver)
        let publisher = try await Peer.connect(to: a, name: "bench-pub", loop: pubLoop)
        let start = monotonicNanos()
        try await Publisher.run(publisher, topic: "bench.export.data", count: messages, size: 16)
        let end = await receiver.waitFor(messages)
        await publisher.close()
        await subscriber.close()
        return BenchResult(name: "bridge export A->NATS", messages: messages, deliveries: messages,
                           received: receiver.count.load(ordering: .acquiring), nanos: end - start, latencies: receiver.sortedLatencies())
    }

    /// A plain NATS publisher to machine B's subscriber: bridge B's import alone.
    private static func importOnly(nats: String, to b: String, messages: Int) async throws -> BenchResult {
        let receiver = Receiver()
        let (pubLoop, subLoop) = try loops()
        defer { stop(pubLoop, subLoop) }
        let subscriber = try await Peer.connect(to: b, name: "bench-sub", loop: subLoop)
        _ = try await subscriber.subscribeViews("bench.bridge.import") { receiver.handle($0) }
        let publisher = try await NATSBench.connect(nats, name: "bench-pub")
        let start = monotonicNanos()
        try await Publisher.run(NATSBench.Sink(client: publisher, subject: "\(subjectPrefix).bench.bridge.import"), count: messages, size: 16)
        let end = await receiver.waitFor(messages)
        await publisher.close()
        await subscriber.close()
        return BenchResult(name: "bridge import NATS->B", messages: messages, deliveries: messages,
                           received: receiver.count.load(ordering: .acquiring), nanos: end - start, latencies: receiver.sortedLatencies())
    }

    /// Sequential round trips of one caller, reported as `label`.
    private static func roundTrips<Caller: Sendable>(
        _ label: String, _ caller: Caller, calls: Int, _ call: @escaping @Sendable (Caller, [UInt8]) async throws -> Void
    ) async throws -> (latencies: [UInt64], line: String) {
        let (latencies, elapsed) = try await RPCTimer.run([caller], calls: calls, call)
        return (latencies, BenchReport.roundTripLine(label, latencies, nanos: elapsed, clients: 1))
    }

    private static func loops() throws -> (EventLoop, EventLoop) {
        (try EventLoop.startThread(name: "bench-a"), try EventLoop.startThread(name: "bench-b"))
    }

    private static func stop(_ loops: EventLoop...) {
        for l in loops { l.stopAndJoin() }
    }

    private static func natsEchoResponder(_ address: String, subject: String) async throws -> NATSClient {
        let c = try await NATSBench.connect(address, name: "bench-responder")
        try await c.subscribe(subject) { m in
            guard let reply = m.replyTo else { return }
            try? c.publishWithoutWaiting(reply, m.payload)
        }
        try await c.flush()
        return c
    }
}

/// A `nats-server` child process on a free loopback port, for the bridge scenario.
final class BenchNATSServer {
    let process = Process()
    let address: String

    init() throws {
        guard let path = ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"].first(where: FileManager.default.isExecutableFile) else {
            throw BenchError("the bridge scenario needs nats-server (apt-get install -y nats-server), or --address of a running one")
        }
        let port = try Self.freePort()
        address = "127.0.0.1:\(port)"
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = ["-a", "127.0.0.1", "-p", "\(port)"]
        process.standardError = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let deadline = monotonicNanos() + 10_000_000_000
        while !Self.accepts(port) {
            guard process.isRunning, monotonicNanos() < deadline else { throw BenchError("nats-server did not start on \(address)") }
            usleep(10_000)
        }
    }

    var pid: Int32 { process.processIdentifier }

    func stop() {
        process.terminate()
        process.waitUntilExit()
    }

    /// A port the kernel just chose for a socket bound to port 0 (closed again; a small race,
    /// acceptable for a benchmark).
    private static func freePort() throws -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &a) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard ok else { throw BenchError("no free TCP port on 127.0.0.1") }
        return UInt16(bigEndian: a.sin_port)
    }

    private static func accepts(_ port: UInt16) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &a) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}
