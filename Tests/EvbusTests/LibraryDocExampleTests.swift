// The Swift examples of docs/LIBRARY.md, line for line (DocSyncTests checks that each still stands
// here). Examples that iterate forever or need another program are compiled, not run (the functions
// marked "compiled only"); the publishing ones run against a broker. Lines outside the examples set
// the scene and check the outcome.

import Evbus
import EvbusTestSupport
import Glibc
import Testing

@Suite struct LibraryDocExampleTests {
    @Test func publishing() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let peer = try await broker.connect()
        let seen = try await peer.subscribe("#")
        let jpegBytes: [UInt8] = [0xFF, 0xD8, 0xFF, 0xE0]

        try await peer.publish("sensors.kitchen.temp", "21.5")              // UTF-8 text
        try await peer.publish("frames.cam0", jpegBytes)                     // [UInt8]
        try await peer.flush()                                               // wait until the broker has routed them

        try await peer.publish("rpc.fib", "30", properties: MessageProperties(
            correlationID: "42", replyTo: "replies.\(peer.connectionID)", headers: ["unit": "steps"]))

        var events: [Event] = []
        for try await event in seen {
            events.append(event)
            if events.count == 3 { break }
        }
        #expect(events.map(\.topic) == ["sensors.kitchen.temp", "frames.cam0", "rpc.fib"])
        #expect(events[1].payload == jpegBytes)
        #expect(events[2].properties.correlationID == "42" && events[2].properties.headers["unit"] == "steps")

        await peer.close()
    }

    /// Stands for what a relay reads from: counts its pauses and resumes.
    final class FrameSource: Sendable {
        let pauses = Collector<String>()
        func pause() { pauses.add("pause") }
        func resume() { pauses.add("resume") }
    }

    @Test func publishingWithoutWaiting() async throws {
        // A broker that reads nothing meanwhile: otherwise the loop may move each frame to the
        // socket as fast as it is queued, and the outbox never passes its watermark.
        let broker = try await BrokerProcess()
        let peer = try await Peer.connect(to: broker.socketPath, name: "relay")
        try #require(await broker.process.stopAndWaitUntilStopped())
        let source = FrameSource()
        let payload = [UInt8](repeating: 1, count: 512 << 10)
        var fulls = 0
        for _ in 0..<32 {  // 16 MiB queued at once: past the 4 MiB high watermark
            let full = try payload.withUnsafeBytes { try peer.publishWithoutWaiting("frames.cam0", bytes: $0) }
            if full { source.pause(); Task { try await peer.waitForRoom(); source.resume() } }
            if full { fulls += 1 }
        }
        #expect(fulls > 0)
        broker.process.signal(SIGCONT)
        #expect(await eventually { source.pauses.items.filter { $0 == "resume" }.count == fulls })
        await peer.close()
    }

    @Test func reconnecting() async throws {
        let socket = TestPaths.socket("doc-reconnect")
        var broker = try InProcessBroker { $0.socketPath = socket }
        var options = Peer.Options()
        options.reconnect = ReconnectPolicy(initialDelay: .milliseconds(100), maxDelay: .seconds(5),
                                            jitter: 0.2, giveUpAfter: .seconds(60), whenBufferFull: .wait)
        options.onConnectionEvent = { event in print("bus:", event) }   // on the peer's I/O thread
        let peer = try await Peer.connect(to: socket, name: "thermostat", options: options)
        let events = peer.connectionEvents()                             // the same events, as a sequence

        let temps = try await peer.subscribe("sensors.#")
        broker.shutdown()
        broker = try InProcessBroker { $0.socketPath = socket }
        defer { broker.shutdown() }
        var seen: [ConnectionEvent] = []
        for await event in events {
            seen.append(event)
            if case .reconnected = event { break }
        }
        guard case .disconnected = seen.first else { Issue.record("\(seen)"); return }
        let publisher = try await broker.connect("sensor")
        try await publisher.publish("sensors.hall", "19")
        for try await event in temps {
            #expect(event.text == "19")
            break
        }
        await publisher.close()
        await peer.close()
    }

    @Test func timeoutsAndCancellation() async throws {
        let broker = try await BrokerProcess()
        let socket = broker.socketPath
        let printed = Collector<String>()
        func print(_ items: String...) { printed.add(items.joined(separator: " ")) }

        var options = Peer.Options()
        options.controlTimeout = .seconds(5)       // a wedged broker costs a caller at most 5 s
        options.handshakeTimeout = .seconds(2)     // ...and a connect or reconnect try at most 2 s
        let peer = try await Peer.connect(to: socket, name: "planner", options: options)

        try #require(await broker.process.stopAndWaitUntilStopped())
        do {
            _ = try await peer.declareQueue("plans")
        } catch let error as EvbusError where error.code == .timeout {
            print("broker busy:", error.message)   // the queue may exist all the same
        }
        broker.process.signal(SIGCONT)
        #expect(printed.items == ["broker busy: the broker did not answer DECLARE_QUEUE within 5.0 seconds; it may still carry it out"])
        #expect(try await eventually { try await peer.topology().queues.contains { $0.name == "plans" } })
        await peer.close()
    }

    // Compiled only: the default socket and /run/myapp are not this test's.
    func connecting() async throws {
        let peer = try await Peer.connect()                                   // default socket
        let daemon = try await Peer.connect(to: "/run/myapp/evbus.sock", name: "camera-daemon")
        _ = (peer, daemon)
    }

    // Compiled only: the iteration runs until the subscription ends.
    func subscribing(_ peer: Peer, counter: Collector<[UInt8]>, book: OrderBook) async throws {
        // 1. An AsyncSequence: the simplest.
        let alerts = try await peer.subscribe("alerts.#", "*.critical")     // one or more patterns
        for try await event in alerts { print(event.topic, event.text, event.publisher) }

        // 2. A handler, called on the peer's I/O thread, in order. Keep it short.
        let sub = try await peer.subscribe("metrics.#") { event in counter.add(event.payload) }

        // 3. A zero-copy handler: no allocation per event; the view is valid only during the call.
        let raw = try await peer.subscribeViews("ticks.#") { view in book.apply(view.payload) }

        try await sub.cancel()          // or peer.unsubscribe(sub): deliveries stop, iteration ends
        _ = raw
    }

    // Compiled only: the worker loop runs until the consumer ends.
    func queues(_ peer: Peer, worker: Peer, handle: ([UInt8]) -> Void) async throws {
        _ = try await peer.declareQueue("task_queue", QueueOptions(maxLength: 10_000, overflow: .rejectPublish))
        try await peer.publish(to: "", key: "task_queue", "resize photo 42", confirm: true)
        try await peer.waitForConfirms()                          // throws `nacked` if the queue refused it

        let work = try await worker.consume("task_queue", ack: .manual, prefetch: 1)
        for try await job in work {
            handle(job.payload)
            try job.ack()                                         // or job.nack(requeue:), job.reject()
        }
    }

    // Compiled only: RPC.md's examples run (RoutingDocExampleTests).
    func requestReply(_ peer: Peer, server: Peer, compute: @escaping @Sendable (String) -> String) async throws {
        let reply = try await peer.request(to: .queue("rpc_queue"), "30", timeout: .seconds(5))
        let responder = try await server.respond(on: "rpc_queue", prefetch: 4) { (r: Request) -> String in compute(r.text) }
        let all = try await peer.requestAll(to: "census", key: "", Array("ping".utf8), within: .seconds(1))
        _ = (reply, responder, all)
    }
}

/// What the zero-copy example feeds.
final class OrderBook: Sendable {
    func apply(_ bytes: UnsafeRawBufferPointer) {}
}
