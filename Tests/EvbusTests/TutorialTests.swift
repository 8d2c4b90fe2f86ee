import Evbus
import EvbusTestSupport
import Synchronization
import Testing

/// RabbitMQ's five tutorials (seeds/003), written against evbus as a RabbitMQ user would, through
/// a real broker on a real socket.
@Suite struct TutorialTests {
    @Test func helloWorld() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let (sender, receiver) = try await broker.connect("send", "receive")
        _ = try await sender.declareQueue("hello")
        try await sender.publish(to: "", key: "hello", "Hello World!")
        _ = try await receiver.declareQueue("hello")  // idempotent: both sides declare, as in the tutorial
        let consumer = try await receiver.consume("hello", ack: .auto)
        let got = try await take(1, from: consumer)
        #expect(got.map(\.text) == ["Hello World!"])
        #expect(got[0].deliveryTag == 0 && !got[0].redelivered && got[0].routingKey == "hello" && got[0].exchange == "")
        await sender.close()
        await receiver.close()
    }

    @Test func workQueuesShareTasksRoundRobinAndAcknowledge() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let producer = try await broker.connect("new_task")
        _ = try await producer.declareQueue("task_queue")
        let workers = [try await broker.connect("w1"), try await broker.connect("w2")]
        let done = [Collector<String>(), Collector<String>()]
        for (worker, log) in zip(workers, done) {
            _ = try await worker.consume("task_queue", ack: .manual, prefetch: 1) { delivery in
                log.add(delivery.text)
                try? delivery.ack()
            }
        }
        for i in 1...10 { try await producer.publish(to: "", key: "task_queue", "task \(i)") }
        #expect(await eventually { done[0].count + done[1].count == 10 })
        #expect(Set(done[0].items + done[1].items) == Set((1...10).map { "task \($0)" }))
        #expect(done[0].count > 0 && done[1].count > 0)
        #expect(try await eventually { try await producer.topology().queues.first { $0.name == "task_queue" }?.acked == 10 })
        for peer in workers + [producer] { await peer.close() }
    }

    @Test func fairDispatchGivesABusyWorkerNothingNew() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let producer = try await broker.connect()
        _ = try await producer.declareQueue("tasks")
        let (slowPeer, fastPeer) = try await broker.connect("slow", "fast")
        // The slow worker takes one task and does not finish it while the test runs.
        let slow = Collector<Delivery>()
        _ = try await slowPeer.consume("tasks", ack: .manual, prefetch: 1) { slow.add($0) }
        let fast = Collector<String>()
        _ = try await fastPeer.consume("tasks", ack: .manual, prefetch: 1) { d in
            fast.add(d.text)
            try? d.ack()
        }
        for i in 0..<20 { try await producer.publish(to: "", key: "tasks", "\(i)") }
        #expect(await eventually { slow.count + fast.count == 20 })
        #expect(slow.count == 1 && fast.count == 19)
        await slowPeer.close()
        await fastPeer.close()
        await producer.close()
    }

    @Test func publishSubscribeWithAFanoutExchange() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let emitter = try await broker.connect("emit_log")
        try await emitter.declareExchange("logs", kind: .fanout)
        var consumers: [Consumer] = []
        var peers: [Peer] = []
        for _ in 0..<2 {
            let peer = try await broker.connect("receive_logs")
            try await peer.declareExchange("logs", kind: .fanout)
            let q = try await peer.declareQueue("", QueueOptions(exclusive: true))
            #expect(q.name.hasPrefix("amq.gen-"))
            try await peer.bind(queue: q.name, exchange: "logs")
            consumers.append(try await peer.consume(q.name, ack: .auto))
            peers.append(peer)
        }
        try await emitter.publish(to: "logs", key: "", "info: Hello World!")
        for c in consumers { #expect(try await take(1, from: c).map(\.text) == ["info: Hello World!"]) }
        for p in peers + [emitter] { await p.close() }
    }

    @Test func routingWithADirectExchange() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let emitter = try await broker.connect()
        try await emitter.declareExchange("direct_logs", kind: .direct)
        let errorsOnly = try await boundConsumer(broker, "direct_logs", .direct, keys: ["error"])
        let everything = try await boundConsumer(broker, "direct_logs", .direct, keys: ["info", "warning", "error"])
        for severity in ["info", "warning", "error", "debug"] {
            try await emitter.publish(to: "direct_logs", key: severity, "\(severity) message")
        }
        try await emitter.publish(to: "direct_logs", key: "error", "end")
        #expect(try await take(2, from: errorsOnly.1).map(\.text) == ["error message", "end"])
        #expect(try await take(4, from: everything.1).map(\.routingKey) == ["info", "warning", "error", "error"])
        for p in [emitter, errorsOnly.0, everything.0] { await p.close() }
    }

    @Test func topicsWithStarAndHash() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let emitter = try await broker.connect()
        try await emitter.declareExchange("topic_logs", kind: .topic)
        let q1 = try await boundConsumer(broker, "topic_logs", .topic, keys: ["*.orange.*"])
        let q2 = try await boundConsumer(broker, "topic_logs", .topic, keys: ["*.*.rabbit", "lazy.#"])
        for key in [
            "quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox", "lazy.brown.fox", "lazy.pink.rabbit",
            "quick.brown.fox", "orange", "quick.orange.male.rabbit", "lazy.orange.male.rabbit", "end.orange.end",
        ] {
            try await emitter.publish(to: "topic_logs", key: key, key)
        }
        #expect(try await take(4, from: q1.1).map(\.text) == ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox", "end.orange.end"])
        // lazy.pink.rabbit matches both of q2's bindings and still arrives once.
        #expect(try await take(5, from: q2.1).map(\.text) == [
            "quick.orange.rabbit", "lazy.orange.elephant", "lazy.brown.fox", "lazy.pink.rabbit", "lazy.orange.male.rabbit",
        ])
        for p in [emitter, q1.0, q2.0] { await p.close() }
    }

    /// Tutorial 2 as RabbitMQ tells it (a durable `task_queue`, persistent tasks, workers that
    /// ack), across a broker restart: the durable tasks are still there, the one a worker held
    /// unacknowledged comes back flagged redelivered, and transient ones are gone.
    @Test func durableTasksSurviveABrokerRestart() async throws {
        let dataDir = TestPaths.dataDirectory("tut2")
        let socket = TestPaths.socket("tut2")
        var broker = try InProcessBroker { $0.dataDir = dataDir; $0.socketPath = socket }
        // The first generation of peers ends with its broker (a reconnecting one would declare
        // `scratch` again and take the tasks back before the check below).
        var once = Peer.Options()
        once.reconnect = .never
        let producer = try await broker.connect("new_task", options: once)
        _ = try await producer.declareQueue("task_queue", QueueOptions(durable: true))
        _ = try await producer.declareQueue("scratch")  // not durable: gone after the restart
        for i in 1...5 { try await producer.publish(to: "", key: "task_queue", "task \(i)", confirm: true, persistent: true) }
        try await producer.publish(to: "", key: "task_queue", "transient task", confirm: true)
        try await producer.waitForConfirms()
        let worker = try await broker.connect("worker", options: once)
        let held = try await worker.consume("task_queue", ack: .manual, prefetch: 1)
        for try await task in held {
            #expect(task.text == "task 1" && !task.redelivered)
            break  // took it, never acknowledged it
        }
        broker.shutdown()

        broker = try InProcessBroker { $0.dataDir = dataDir; $0.socketPath = socket }
        defer { broker.shutdown() }
        let next = try await broker.connect("worker 2")
        let queues = try await next.topology().queues
        #expect(queues.map(\.name) == ["task_queue"])
        #expect(queues.first?.durable == true && queues.first?.ready == 5)
        let done = Collector<(String, Bool)>()
        _ = try await next.consume("task_queue", ack: .manual, prefetch: 1) { delivery in
            done.add((delivery.text, delivery.redelivered))
            try? delivery.ack()
        }
        #expect(await eventually { done.count == 5 })
        #expect(done.items.map(\.0) == (1...5).map { "task \($0)" })
        #expect(done.items.map(\.1) == [true, false, false, false, false])
        await next.close()
    }

    /// A receive_logs-style consumer: exclusive broker-named queue bound with `keys`.
    func boundConsumer(_ broker: InProcessBroker, _ exchange: String, _ kind: ExchangeKind, keys: [String]) async throws -> (Peer, Consumer) {
        let peer = try await broker.connect()
        try await peer.declareExchange(exchange, kind: kind)
        let q = try await peer.declareQueue("", QueueOptions(exclusive: true))
        for key in keys { try await peer.bind(queue: q.name, exchange: exchange, key: key) }
        return (peer, try await peer.consume(q.name, ack: .auto))
    }
}

