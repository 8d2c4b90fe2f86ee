import Evbus
import EvbusIO

/// `evbus bench`: starts a broker process on a temporary socket and measures throughput, latency
/// and per-connection memory. Build with `-c release`; debug numbers mean nothing.
struct BenchCommand: EvbusCommand {
    static let allScenarios = [
        "pubsub", "pubsub-1k", "fanout", "pubsub-event", "fanout-event", "latency", "idle", "dispatch", "dispatch-latency",
        "workqueue", "workqueue-4", "workqueue-confirm", "workqueue-durable", "workqueue-durable-4", "rpc", "rpc-8", "rpc-poll",
        "burst", "short",
    ]
    /// Run only when named: they need a program evbus does not ship (nats-server).
    static let namedOnlyScenarios = ["bridge"]
    static let spec = CommandSpec(
        name: "bench",
        abstract: "Measure the broker (run from a release build).",
        discussion: """
            Scenarios: pubsub (1 publisher -> 1 subscriber, 16-byte payloads), pubsub-1k (1 KiB
            payloads), fanout (1 -> 10 subscribers, one topic) use the zero-copy `EventView`
            handler; pubsub-event and fanout-event repeat them with the allocating `Event` handler;
            latency (one-way, paced at 20,000
            msgs/s), dispatch and dispatch-latency (one controller, no broker), idle (broker RSS per idle connection: 1,000 connections opened after --warm-up ones, 100 by default),
            burst (10,000 idle subscribers each sent one 1 KiB message, twice: broker RSS idle and after each round),
            short (30,000 connections opened and closed in turn: broker RSS kept);
            workqueue (1 producer -> 1 queue -> 1 consumer, 16-byte messages, manual ack of each message,
            prefetch 100), workqueue-4 (4 competing consumers), workqueue-confirm (the producer also
            publishes with confirms and waits for them), workqueue-durable and workqueue-durable-4
            (a durable queue, persistent messages published with confirms, 10,000 unconfirmed at
            most, confirmed once synced; syncs per second, messages per sync and publish-to-confirm
            latency); rpc (one client, sequential request/reply round
            trips to a responder echoing 16 bytes: latency), rpc-8 (8 clients at once: round trips/s) and
            rpc-poll (rpc with the client's loop polling 50 µs before it sleeps: latency for CPU);
            bridge, only when named (two brokers, each with an `evbus bridge` to one nats-server, started
            here unless --address names one: A -> NATS -> B throughput and each half alone, one-way latency at 1,000 msgs/s and
            request/reply round trips from B to A, each beside plain NATS clients doing the same). Publisher and
            subscribers are peers in this process, each on its own event loop; the broker is a
            separate `evbus broker` process.
            """,
        options: [
            .init(long: "scenario", short: nil, valueName: "names", help: "Comma-separated scenarios (default: all)."),
            .init(long: "messages", short: "m", valueName: "n", help: "Messages per throughput scenario (default: 2,000,000; 500,000 for pubsub-1k and fanout)."),
            .init(long: "connections", short: nil, valueName: "n", help: "Connections for the idle, burst and short scenarios (default: 1,000, 10,000 and 30,000)."),
            .init(long: "warm-up", short: nil, valueName: "n", help: "Connections the idle scenario opens before measuring (default: a tenth of --connections; 0 = a fresh broker)."),
            .init(long: "against", short: nil, valueName: "broker", help: "Measure nats, redis or rabbitmq instead (started by you; see docs/BENCHMARKS.md)."),
            .init(long: "address", short: nil, valueName: "address", help: "With --against: host:port (nats 127.0.0.1:4222, rabbitmq 127.0.0.1:5672) or a Unix socket path (redis); with the bridge scenario, a running NATS server's host:port."),
            .init(long: "server-pid", short: nil, valueName: "pid", help: "With --against: the server's pid, for the idle scenario's memory figure."),
            .init(long: "access", short: nil, valueName: nil, help: "Run the broker with access rules in force (docs/SECURITY.md): what the rules cost."),
        ])

    var scenarios: [String]
    var messages: Int?
    var connections: Int?
    var warmUp: Int
    var foreign: ForeignBus?
    var serverPID: Int32?
    var withAccess: Bool
    var natsAddress: String?

    init(_ a: ParsedArguments) throws(UsageError) {
        scenarios = a.value("scenario").map { $0.split(separator: ",").map(String.init) } ?? Self.allScenarios
        for s in scenarios where !(Self.allScenarios + Self.namedOnlyScenarios).contains(s) {
            throw UsageError("Unknown scenario '\(s)' (known: \((Self.allScenarios + Self.namedOnlyScenarios).joined(separator: ", ")))")
        }
        messages = try a.int("messages", in: 1...1_000_000_000, spec: Self.spec)
        connections = try a.int("connections", in: 1...100_000, spec: Self.spec)
        warmUp = try a.int("warm-up", in: 0...100_000, spec: Self.spec) ?? MemoryScenarios.idleWarmUp(connections ?? 1000)
        serverPID = try a.int("server-pid", in: 1...Int(Int32.max), spec: Self.spec).map { Int32($0) }
        withAccess = a.flag("access")
        natsAddress = a.value("address")
        if let against = a.value("against") {
            guard let kind = ForeignKind(rawValue: against) else {
                throw UsageError("The value '\(against)' is invalid for '--against <broker>': expected nats, redis or rabbitmq")
            }
            let defaults: [ForeignKind: String] = [.nats: "127.0.0.1:4222", .redis: "/tmp/redis-bench.sock", .rabbitmq: "127.0.0.1:5672"]
            foreign = ForeignBus(kind: kind, address: a.value("address") ?? defaults[kind]!)
            let supported = kind == .rabbitmq ? ["workqueue", "workqueue-4", "workqueue-confirm", "workqueue-durable", "workqueue-durable-4"] : ["pubsub", "pubsub-1k", "fanout", "idle", "rpc", "rpc-8"]
            if a.value("scenario") == nil { scenarios = supported }
            for s in scenarios where !supported.contains(s) {
                throw UsageError("Scenario '\(s)' is not run against \(kind.rawValue); use \(supported.joined(separator: ", "))")
            }
        }
    }

    func runForeign(_ bus: ForeignBus) async throws -> Int32 {
        Terminal.out("evbus bench --against \(bus.kind.rawValue) at \(bus.address)\n")
        var lost = 0
        for s in scenarios {
            let line: String
            switch s {
            case "workqueue", "workqueue-4", "workqueue-confirm", "workqueue-durable", "workqueue-durable-4":
                let r = try ForeignScenarios.workQueue(
                    bus, name: s, messages: messages ?? 200_000, consumers: s.hasSuffix("-4") ? 4 : 1,
                    confirm: s == "workqueue-confirm" || s.hasPrefix("workqueue-durable"), durable: s.hasPrefix("workqueue-durable"))
                lost += r.lost
                line = r.line
            case "pubsub", "pubsub-1k", "fanout":
                let r = try await ForeignScenarios.pubsub(
                    bus, name: s, messages: messages ?? (s == "pubsub" ? 2_000_000 : 500_000),
                    size: s == "pubsub-1k" ? 1024 : 16, subscribers: s == "fanout" ? 10 : 1)
                lost += r.lost
                line = r.line
            case "rpc", "rpc-8":
                let calls = messages ?? (s == "rpc" ? 20_000 : 80_000), clients = s == "rpc" ? 1 : 8
                line = bus.kind == .nats
                    ? try await NATSBench.roundTrips(bus.address, name: s, calls: calls, clients: clients)
                    : try ForeignRPC.roundTrips(bus, name: s, calls: calls, clients: clients)
            default:
                guard let serverPID else { throw UsageError("the idle scenario needs --server-pid") }
                line = try await ForeignScenarios.idle(bus, connections: connections ?? 1000, warmUp: warmUp, serverPID: serverPID)
            }
            Terminal.out(line + "\n")
        }
        return lost == 0 ? ExitCode.success : ExitCode.failure
    }

    func run() async throws -> Int32 {
        #if DEBUG
        Terminal.err("warning: this is a debug build; run `swift run -c release evbus bench` for real figures\n")
        #endif
        if let foreign { return try await runForeign(foreign) }
        let broker = try BenchBroker(accessRules: withAccess)
        defer { broker.stop() }
        Terminal.out("evbus bench: broker pid \(broker.pid) on \(broker.socketPath)\(withAccess ? " with access rules" : "")\n")
        var lost = 0
        for s in scenarios {
            let socket = broker.socketPath
            let line: String
            switch s {
            case "pubsub":
                let r = try await Scenarios.pubsub(name: s, socket: socket, messages: messages ?? 2_000_000, size: 16, subscribers: 1, brokerPID: broker.pid)
                lost += r.lost
                line = r.line
            case "pubsub-1k":
                let r = try await Scenarios.pubsub(name: s, socket: socket, messages: messages ?? 500_000, size: 1024, subscribers: 1, brokerPID: broker.pid)
                lost += r.lost
                line = r.line
            case "fanout":
                let r = try await Scenarios.pubsub(name: s, socket: socket, messages: messages ?? 500_000, size: 16, subscribers: 10, brokerPID: broker.pid)
                lost += r.lost
                line = r.line
            case "pubsub-event":
                let r = try await Scenarios.pubsub(name: s, socket: socket, messages: messages ?? 2_000_000, size: 16, subscribers: 1, delivery: .event)
                lost += r.lost
                line = r.line
            case "fanout-event":
                let r = try await Scenarios.pubsub(name: s, socket: socket, messages: messages ?? 500_000, size: 16, subscribers: 10, delivery: .event)
                lost += r.lost
                line = r.line
            case "workqueue", "workqueue-4", "workqueue-confirm":
                let r = try await QueueScenarios.workQueue(
                    name: s, socket: socket, messages: messages ?? 2_000_000, consumers: s == "workqueue-4" ? 4 : 1,
                    prefetch: 100, confirm: s == "workqueue-confirm")
                lost += r.lost
                line = r.line
            case "workqueue-durable", "workqueue-durable-4":
                let r = try await DurableScenarios.workQueue(
                    name: s, socket: socket, messages: messages ?? 1_000_000, consumers: s.hasSuffix("-4") ? 4 : 1)
                lost += r.lost
                line = r.line
            case "rpc", "rpc-8", "rpc-poll":
                line = try await RPCScenarios.roundTrips(
                    name: s, socket: socket, calls: messages ?? (s == "rpc-8" ? 80_000 : 20_000), clients: s == "rpc-8" ? 8 : 1,
                    clientPolling: s == "rpc-poll" ? .microseconds(50) : .zero, brokerPID: broker.pid)
            case "dispatch":
                line = try await ControllerScenarios.throughput(count: messages ?? 2_000_000)
            case "dispatch-latency":
                line = try await ControllerScenarios.latency(count: 50_000)
            case "latency":
                let r = try await Scenarios.latency(socket: socket, messages: 40_000, rate: 20_000)
                lost += r.lost
                line = r.line
            case "bridge":
                let r = try await BridgeScenarios.run(natsAddress: natsAddress, messages: messages)
                lost += r.lost
                line = r.lines.joined(separator: "\n")
            case "burst":
                let fresh = try BenchBroker()
                defer { fresh.stop() }
                line = try await MemoryScenarios.burst(broker: fresh, connections: connections ?? 10_000)
            case "short":
                let fresh = try BenchBroker()
                defer { fresh.stop() }
                line = try await MemoryScenarios.short(broker: fresh, connections: connections ?? 30_000)
            default:
                // A fresh broker: one whose heap already grew in earlier scenarios would hide the cost.
                let fresh = try BenchBroker()
                defer { fresh.stop() }
                line = try await MemoryScenarios.idle(broker: fresh, connections: connections ?? 1000, warmUp: warmUp)
            }
            Terminal.out(line + "\n")
        }
        return lost == 0 ? ExitCode.success : ExitCode.failure
    }
}
