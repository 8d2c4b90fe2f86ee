import EvbusIO
import Synchronization
import Foundation

/// The evbus scenarios, run against NATS, Redis or RabbitMQ with the same payloads and measurements.
enum ForeignScenarios {
    static func pubsub(_ bus: ForeignBus, name: String, messages: Int, size: Int, subscribers: Int) async throws -> BenchResult {
        if bus.kind == .nats { return try await NATSBench.pubsub(bus.address, name: name, messages: messages, size: size, subscribers: subscribers) }
        let subject = "bench.\(name).\(getpid())"
        let receivers = (0..<subscribers).map { _ in Receiver() }
        let sockets = try receivers.map { try bus.subscriber(subject, $0) }
        let start = monotonicNanos()
        try bus.publish(subject: subject, count: messages, size: size)
        var end = start
        for r in receivers { end = max(end, r.waitForBlocking(messages)) }
        withExtendedLifetime(sockets) {}
        var latencies = receivers.flatMap { $0.sortedLatencies() }
        latencies.sort()
        return BenchResult(
            name: "redis \(name)", messages: messages, deliveries: messages * subscribers,
            received: receivers.reduce(0) { $0 + $1.count.load(ordering: .acquiring) }, nanos: end - start,
            latencies: latencies, outOfOrder: receivers.reduce(0) { $0 + $1.outOfOrder.load(ordering: .relaxed) })
    }

    /// The idle scenario against another broker, measured the same way (after the same warm-up).
    static func idle(_ bus: ForeignBus, connections: Int, warmUp: Int, serverPID: Int32) async throws -> String {
        if bus.kind == .nats { return try await NATSBench.idle(bus.address, connections: connections, warmUp: warmUp, serverPID: serverPID) }
        var sockets: [RawSocket] = []
        for i in 0..<warmUp { sockets.append(try bus.subscriber("idle.\(i).\(getpid())", Receiver())) }
        usleep(200_000)
        let before = BenchBroker.residentBytes(pid: serverPID)
        for i in warmUp..<(warmUp + connections) { sockets.append(try bus.subscriber("idle.\(i).\(getpid())", Receiver())) }
        usleep(500_000)
        let after = BenchBroker.residentBytes(pid: serverPID)
        withExtendedLifetime(sockets) {}
        return "redis idle    \(connections) connections (after \(warmUp))  server RSS \(before / 1024) KiB -> \(after / 1024) KiB  "
            + "= \(BenchReport.format(Double(after - before) / Double(connections) / 1024, 2)) KiB per connection"
    }

    /// RabbitMQ's side of the work-queue scenarios: same queue shape, prefetch, acks and payload.
    static func workQueue(_ bus: ForeignBus, name: String, messages: Int, consumers: Int, confirm: Bool, durable: Bool = false) throws -> BenchResult {
        let queue = "bench.\(name).\(getpid())"
        let admin = try AMQPClient(address: bus.address)
        try admin.declareQueue(queue, durable: durable)
        let acked = Receiver()
        let clients = try (0..<consumers).map { _ in try AMQPClient(address: bus.address) }
        for c in clients { try c.consume(queue, prefetch: 100, acked: acked) }
        let producer = try AMQPClient(address: bus.address)
        if confirm { try producer.confirmSelect() }
        let clock = ConfirmClock()
        let start = monotonicNanos()
        try producer.publish(queue: queue, count: messages, confirm: confirm, persistent: durable, clock: clock,
                             window: durable ? DurableScenarios.window : nil)
        let end = acked.waitForBlocking(messages)
        try admin.deleteQueue(queue)
        withExtendedLifetime(clients) {}
        return BenchResult(
            name: "rabbitmq \(name)", messages: messages, deliveries: messages, received: acked.count.load(ordering: .acquiring),
            nanos: end - start, latencies: durable ? clock.sortedLatencies : [],
            extra: "  (prefetch 100\(confirm ? ", confirms" : "")\(durable ? ", durable queue, delivery mode 2, window \(DurableScenarios.window)" : ""))")
    }
}
