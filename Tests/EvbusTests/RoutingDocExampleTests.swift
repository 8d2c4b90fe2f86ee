// The Swift examples of docs/ROUTING.md and docs/RPC.md, each run as a test; DocSyncTests checks
// that every code block of those pages still appears here verbatim. Lines outside the blocks set
// the scene (a broker, the peers an example assumes) and check the outcome.

import Evbus
import EvbusIO
import EvbusTestSupport
import Testing

@Suite struct RoutingDocExampleTests {
    @Test func helloWorld() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let socketPath = broker.socketPath
        // The example, under a deadline: if nothing arrived, its loop would wait forever.
        let peer = try await withDeadline {
        let peer = try await Peer.connect(to: socketPath)
        _ = try await peer.declareQueue("hello")                     // idempotent: both sides may declare
        try await peer.publish(to: "", key: "hello", "Hello World!")  // the default exchange routes by queue name
        for try await delivery in try await peer.consume("hello", ack: .auto) {
            print(delivery.text)                                     // Hello World!
            break
        }
        return peer
        }
        let queue = try await peer.topology().queues.first { $0.name == "hello" }
        #expect(queue?.delivered == 1 && queue?.ready == 0, "exactly the one message was delivered")
        await peer.close()
    }

    @Test func workQueues() async throws {
        let dataDir = TestPaths.dataDirectory("tut2")
        let broker = try InProcessBroker { $0.dataDir = dataDir }
        defer { broker.shutdown() }
        let socketPath = broker.socketPath
        let worker = try await Peer.connect(to: socketPath, name: "worker")
        let producer = try await Peer.connect(to: socketPath, name: "new_task")
        _ = try await worker.declareQueue("task_queue", QueueOptions(durable: true))  // survives a restart
        _ = try await worker.consume("task_queue", ack: .manual, prefetch: 1) { delivery in
            print("working on", delivery.text)
            try? delivery.ack()                 // only now may the broker send this worker another task
        }
        try await producer.publish(to: "", key: "task_queue", "a task", confirm: true, persistent: true)
        try await producer.waitForConfirms()    // the task is on disk
        #expect(try await eventually { try await producer.topology().queues.first { $0.name == "task_queue" }?.acked == 1 })
        await producer.close()
        await worker.close()
    }

    @Test func fanoutDirectAndTopicExchanges() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let socketPath = broker.socketPath
        let peer = try await Peer.connect(to: socketPath, name: "receive_logs")
        try await peer.declareExchange("logs", kind: .fanout)
        let q = try await peer.declareQueue("", QueueOptions(exclusive: true))   // broker-named, private
        try await peer.bind(queue: q.name, exchange: "logs")
        let logs = try await peer.consume(q.name, ack: .auto)

        let emitter = try await Peer.connect(to: socketPath, name: "emit_log")
        try await emitter.publish(to: "logs", key: "", "info: Hello World!")
        for try await line in logs { print(line.text); break }

        try await peer.declareExchange("direct_logs", kind: .direct)
        for severity in ["warning", "error"] {
            try await peer.bind(queue: q.name, exchange: "direct_logs", key: severity)
        }
        try await emitter.publish(to: "direct_logs", key: "error", "Run. Run. Or it will explode.")

        try await peer.declareExchange("topic_logs", kind: .topic)
        try await peer.bind(queue: q.name, exchange: "topic_logs", key: "kern.*")
        try await peer.bind(queue: q.name, exchange: "topic_logs", key: "*.critical")
        try await emitter.publish(to: "topic_logs", key: "kern.critical", "A critical kernel error")

        #expect(try await take(2, from: logs).map(\.text) == ["Run. Run. Or it will explode.", "A critical kernel error"])
        await emitter.close()
        await peer.close()
    }

    @Test func publishingWithPropertiesAndConfirms() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let peer = try await broker.connect()
        try await peer.declareExchange("orders", kind: .topic)
        _ = try await peer.declareQueue("eu-orders")
        try await peer.bind(queue: "eu-orders", exchange: "orders", key: "eu.#")
        let payload = Array(#"{"id":7}"#.utf8)
        try await peer.publish(to: "orders", key: "eu.new", payload,
                               properties: MessageProperties(contentType: "application/json", correlationID: "42",
                                                             replyTo: "replies", messageID: "m-1",
                                                             timestamp: 1_700_000_000_000, headers: ["tenant": "a"],
                                                             expiration: 60_000),
                               mandatory: true, confirm: true)
        try await peer.waitForConfirms()
        #expect(try await peer.declareQueue("eu-orders", passive: true).messageCount == 1)

        for text in ["first", "last"] { try await peer.publish(to: "", key: "jobs", text) }  // no queue yet: dropped
        _ = try await peer.declareQueue("jobs")
        for text in ["first", "last"] { try await peer.publish(to: "", key: "jobs", text) }
        let consumer = try await peer.consume("jobs", ack: .manual, prefetch: 100)   // AsyncSequence of Delivery
        for try await d in consumer {
            print(d.routingKey, d.text, d.redelivered, d.properties.headers)
            try d.ack()
            if d.text == "last" { break }
        }
        try await consumer.cancel()          // unacknowledged deliveries go back to the queue
        await peer.close()
    }

    // MARK: docs/RPC.md

    func fib(_ n: Int) -> UInt64 { n < 2 ? UInt64(n) : fib(n - 1) + fib(n - 2) }

    @Test func callingAndResponding() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let socketPath = broker.socketPath
        let server = try await Peer.connect(to: socketPath, name: "server")
        do {
            let peer = server
            let pool = try ControllerPool(name: "fib", workers: 2)
            let responder = try await peer.respond(on: "rpc_queue", prefetch: 4) { (request: Request) -> String in
                guard let n = Int(request.text) else { throw RemoteError("invalid-argument", "not a number") }
                return String(try await pool.submit { _ in fib(n) }.value)
            }
            try await server.declareExchange("services", kind: .topic)
            _ = try await server.declareQueue("pricing")
            try await server.bind(queue: "pricing", exchange: "services", key: "pricing.#")
            _ = try await server.respond(on: "pricing") { (_: Request) -> String in "9.99" }

            try await calling(socketPath)

            // ...
            try await responder.cancel()
            pool.shutdown()
        }
        await server.close()
    }

    func calling(_ socketPath: String) async throws {
        let peer = try await Peer.connect(to: socketPath)
        let reply = try await peer.request(to: .queue("rpc_queue"), "30", timeout: .seconds(5))
        print(reply.text)                                     // "832040"; also reply.payload, reply.headers

        // Through an exchange with a routing key:
        let price = try await peer.request(to: .exchange("services", key: "pricing.eu"), #"{"sku":1}"#)
        #expect(reply.text == "832040" && price.text == "9.99")
        await peer.close()
    }

    @Test func aPollingCaller() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let socketPath = broker.socketPath
        let server = try await Peer.connect(to: socketPath)
        _ = try await server.respond(on: "echo") { (request: Request) -> [UInt8] in request.payload }
        let loop = try EventLoop.startThread(name: "rpc-caller")
        loop.idleSpin = .microseconds(50)          // poll up to 50 µs before sleeping
        let caller = try await Peer.connect(to: socketPath, loop: loop)
        for i in 0..<100 { #expect(try await caller.request(to: .queue("echo"), "\(i)").text == "\(i)") }
        await caller.close()
        await server.close()
        loop.stopAndJoin()
    }

    @Test func scatterGather() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let peer = try await broker.connect()
        var nodes: [Peer] = []
        for i in 0..<2 {
            let node = try await broker.connect()
            try await node.declareExchange("census", kind: .fanout)
            let q = try await node.declareQueue("", QueueOptions(exclusive: true))
            try await node.bind(queue: q.name, exchange: "census")
            _ = try await node.respond(on: q.name) { (_: Request) -> String in "node \(i) ok" }
            nodes.append(node)
        }
        try await peer.declareExchange("census", kind: .fanout)      // each responder binds its own queue
        let replies = try await peer.requestAll(to: "census", key: "", Array("status?".utf8), within: .seconds(2))
        print(replies.map(\.text))
        #expect(Set(replies.map(\.text)) == ["node 0 ok", "node 1 ok"])
        for n in nodes { await n.close() }
        await peer.close()
    }
}
