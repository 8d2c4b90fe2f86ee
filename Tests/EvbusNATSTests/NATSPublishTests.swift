import EvbusController
import EvbusIO
import EvbusNATS
import EvbusTestSupport
import Synchronization
import Testing

/// The publish path: frames queued from any thread and written in batches by the client's thread
/// (`NATSOutbox`), in order, and publishers held back while the server does not read.
@Suite struct NATSPublishTests {
    func client(_ urls: [String], name: String) async throws -> NATSClient {
        let c = try NATSClient(NATSClient.Options(servers: urls, name: name))
        try await c.waitUntilConnected()
        return c
    }

    /// The server answers a PING after everything sent before it, and delivers to a connection in
    /// order: so once `flush` returns, every message published before it has been handled.
    /// A PING overtaking queued publishes would end this with fewer.
    @Test func aFlushFollowsThePublishesQueuedBeforeIt() async throws {
        let server = try await NATSServerProcess()
        let c = try await client([server.url], name: "self")
        let got = Collector<UInt32>()
        try await c.subscribe("count.up") { m in got.add(m.payload.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }) }
        try await c.flush()
        for round in 0..<5 {
            for i in 0..<2000 { try await c.publish("count.up", withUnsafeBytes(of: UInt32(round * 2000 + i)) { Array($0) }) }
            try await c.flush()
            #expect(got.count == (round + 1) * 2000, "round \(round)")
        }
        #expect(got.items == (0..<10_000).map(UInt32.init))
        await c.close()
    }

    /// Several threads publishing at once through one client: nothing lost, and each
    /// publisher's messages in its own order.
    @Test func concurrentPublishersKeepTheirOwnOrder() async throws {
        let server = try await NATSServerProcess()
        let pub = try await client([server.url], name: "pub")
        let sub = try await client([server.url], name: "sub")
        let got = Collector<(Int, Int)>()
        try await sub.subscribe("mix.*") { m in
            got.add((Int(m.subject.dropFirst(4))!, Int(String(decoding: m.payload, as: UTF8.self))!))
        }
        try await sub.flush()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for p in 0..<4 {
                group.addTask { for i in 0..<2500 { try await pub.publish("mix.\(p)", Array("\(i)".utf8)) } }
            }
            try await group.waitForAll()
        }
        try await pub.flush()
        #expect(await eventually { got.count == 10_000 })
        for p in 0..<4 { #expect(got.items.filter { $0.0 == p }.map(\.1) == Array(0..<2500), "publisher \(p)") }
        await pub.close()
        await sub.close()
    }

    /// A server that stops reading: the publisher suspends with a bounded amount queued (the
    /// socket's, the transport's 1 MiB and the outbox's 1 MiB) instead of growing memory without
    /// end, and goes on, losing nothing, once the server reads again.
    @Test func aPublisherWaitsWhileTheServerDoesNotRead() async throws {
        let stalled = StalledServer()
        let controller = try Controller(name: "stalled-nats", idleSpin: .zero)
        let listener = try controller.listen(on: .tcp("127.0.0.1", 0)) { StalledServer.Connection(stalled) }
        let port = try #require(listener.address.port)
        let pub = try await client(["nats://127.0.0.1:\(port)"], name: "pub")
        let chunk = [UInt8](repeating: 0x61, count: 64 << 10)
        let sent = Atomic<Int>(0)
        let total = 2000  // 128 MiB: far more than every buffer between the two together
        let publisher = Task {
            for _ in 0..<total {
                try await pub.publish("bulk.data", chunk)
                sent.add(1, ordering: .relaxed)
            }
        }
        // It stops: the count stays put for 300 ms, well short of the total.
        var held = -1
        for _ in 0..<100 {
            let before = sent.load(ordering: .relaxed)
            try await Task.sleep(for: .milliseconds(300))
            held = sent.load(ordering: .relaxed)
            if held == before && held > 0 { break }
        }
        #expect(held < 400, "published \(held) chunks of 64 KiB into a server that reads nothing")
        try await Task.sleep(for: .milliseconds(300))
        #expect(sent.load(ordering: .relaxed) == held, "the publisher went on while the server read nothing")
        try controller.loop.execute { stalled.resume() }
        try await publisher.value
        #expect(await eventually(30) { stalled.received.load(ordering: .relaxed) >= total * chunk.count })
        await pub.close()
        listener.close()
        controller.shutdown()
        await controller.stopped()
    }
}

/// A NATS server that greets, accepts CONNECT, and then reads nothing until `resume`, counting
/// what it then reads.
/// Its connection lives on its controller's thread; `received` is read from the test.
final class StalledServer: Sendable {
    let received = Atomic<Int>(0)
    private let connection = Mutex<LoopBoundTransport?>(nil)

    /// Controller's thread.
    func resume() { connection.withLock { $0?.transport.resumeProducing() } }

    /// The transport, only touched on the controller's thread (it traps elsewhere).
    struct LoopBoundTransport: @unchecked Sendable {  // only used on the listener's controller thread
        let transport: StreamTransport
    }

    final class Connection: StreamProtocol {
        let server: StalledServer
        init(_ server: StalledServer) { self.server = server }

        private var transport: StreamTransport?
        private var accepted = false
        private var greeting = ""

        func connectionMade(_ transport: StreamTransport) {
            transport.write("INFO {\"server_id\":\"stalled\",\"headers\":true,\"max_payload\":1048576}\r\n")
            self.transport = transport
            server.connection.withLock { $0 = LoopBoundTransport(transport: transport) }
        }

        /// Accepts CONNECT (a PONG to the PING the client sends after it), then reads nothing
        /// more until resumed.
        func dataReceived(_ data: [UInt8]) {
            guard accepted else {
                greeting += String(decoding: data, as: UTF8.self)
                if greeting.contains("PING\r\n") {
                    accepted = true
                    transport?.write("PONG\r\n")
                    transport?.pauseProducing()
                }
                return
            }
            server.received.add(data.count, ordering: .relaxed)
        }
    }
}
