import EvbusController
import EvbusIO
import EvbusNATS
import Glibc
import Synchronization

/// The scenarios through a NATS server, with the project's own NATS client (EvbusNATS, the one
/// `evbus bridge` uses): same payloads, counts and measurements as evbus's scenarios.
enum NATSBench {
    static func connect(_ address: String, name: String, controller: Controller? = nil) async throws -> NATSClient {
        let c = try NATSClient(NATSClient.Options(servers: [address], name: name), controller: controller)
        try await c.waitUntilConnected()
        return c
    }

    struct Sink: BenchSink {
        let client: NATSClient
        let subject: String
        func send(_ payload: [UInt8]) async throws { try await client.publish(subject, payload) }
        func finish() async throws { try await client.flush(timeout: .seconds(60)) }
    }

    /// A client subscribed to `subject`, feeding `receiver`; returns once the server has the subscription.
    static func subscriber(_ address: String, _ subject: String, _ receiver: Receiver, controller: Controller? = nil) async throws -> NATSClient {
        let c = try await connect(address, name: "bench-sub", controller: controller)
        try await c.subscribeViews(subject) { receiver.handle(payload: $0.payload) }  // zero-copy, as the evbus subscribers
        try await c.flush()
        return c
    }

    /// 1 publisher -> `subscribers` subscribers on one subject, or paced with every message stamped.
    static func pubsub(
        _ address: String, name: String, messages: Int, size: Int, subscribers: Int, pacedPerSecond: Int? = nil
    ) async throws -> BenchResult {
        let subject = "bench.\(name).\(getpid())"
        let receivers = (0..<subscribers).map { _ in Receiver() }
        var clients: [NATSClient] = []
        for r in receivers { clients.append(try await subscriber(address, subject, r)) }
        let publisher = try await connect(address, name: "bench-pub")
        let start = monotonicNanos()
        try await Publisher.run(Sink(client: publisher, subject: subject), count: messages, size: size,
                                stampEvery: pacedPerSecond == nil ? 64 : 1, pacedPerSecond: pacedPerSecond)
        var end = start
        for r in receivers { end = max(end, await r.waitFor(messages)) }
        var latencies = receivers.flatMap { $0.sortedLatencies() }
        latencies.sort()
        await publisher.close()
        for c in clients { await c.close() }
        return BenchResult(
            name: "nats \(name)", messages: messages, deliveries: messages * subscribers,
            received: receivers.reduce(0) { $0 + $1.count.load(ordering: .acquiring) }, nanos: end - start,
            latencies: latencies, outOfOrder: receivers.reduce(0) { $0 + $1.outOfOrder.load(ordering: .relaxed) })
    }

    /// Sequential request/reply round trips from `clients` clients to one responder echoing 16
    /// bytes: NATS's own request/reply (a reply subject per request, answered by the responder).
    static func roundTrips(_ address: String, name: String, calls: Int, clients: Int) async throws -> String {
        let service = "bench.\(name).\(getpid())"
        let responder = try await connect(address, name: "bench-responder")
        try await responder.subscribe(service) { m in
            guard let reply = m.replyTo else { return }
            try? responder.publishWithoutWaiting(reply, m.payload)
        }
        try await responder.flush()
        var callers: [NATSClient] = []
        for _ in 0..<clients { callers.append(try await connect(address, name: "bench-client")) }
        let (latencies, elapsed) = try await RPCTimer.run(callers, calls: calls) { c, payload in _ = try await c.request(service, payload) }
        for c in callers { await c.close() }
        await responder.close()
        return BenchReport.roundTripLine("nats \(name)", latencies, nanos: elapsed, clients: clients)
    }

    /// Server memory per idle connection: each a client with one subscription, all on one thread.
    static func idle(_ address: String, connections: Int, warmUp: Int, serverPID: Int32) async throws -> String {
        let controller = try Controller(name: "bench-idle", idleSpin: .zero)
        var clients: [NATSClient] = []
        for i in 0..<warmUp { clients.append(try await subscriber(address, "idle.\(i).\(getpid())", Receiver(), controller: controller)) }
        try await Task.sleep(for: .milliseconds(200))
        let before = BenchBroker.residentBytes(pid: serverPID)
        for i in warmUp..<(warmUp + connections) {
            clients.append(try await subscriber(address, "idle.\(i).\(getpid())", Receiver(), controller: controller))
        }
        try await Task.sleep(for: .milliseconds(500))
        let after = BenchBroker.residentBytes(pid: serverPID)
        for c in clients { await c.close() }
        controller.shutdown()
        await controller.stopped()
        return "nats idle    \(connections) connections (after \(warmUp))  server RSS \(before / 1024) KiB -> \(after / 1024) KiB  "
            + "= \(BenchReport.format(Double(after - before) / Double(connections) / 1024, 2)) KiB per connection"
    }
}

/// Times sequential round trips: a warm-up of 200 per caller, then `calls / callers.count` each,
/// all callers at once; the sorted latencies and the elapsed time.
enum RPCTimer {
    static func run<Caller: Sendable>(
        _ callers: [Caller], calls: Int, _ call: @escaping @Sendable (Caller, [UInt8]) async throws -> Void
    ) async throws -> ([UInt64], UInt64) {
        let payload = [UInt8](repeating: 0x61, count: 16)
        for c in callers { for _ in 0..<200 { try await call(c, payload) } }
        let perCaller = calls / callers.count
        let start = monotonicNanos()
        let latencies = try await withThrowingTaskGroup(of: [UInt64].self) { group in
            for c in callers {
                group.addTask {
                    var mine: [UInt64] = []
                    mine.reserveCapacity(perCaller)
                    for _ in 0..<perCaller {
                        let t0 = monotonicNanos()
                        try await call(c, payload)
                        mine.append(monotonicNanos() - t0)
                    }
                    return mine
                }
            }
            return try await group.reduce(into: [UInt64]()) { $0 += $1 }.sorted()
        }
        return (latencies, monotonicNanos() - start)
    }
}
