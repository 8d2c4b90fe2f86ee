import Evbus
import EvbusTestSupport
import EvbusWire
import Foundation
import Testing

/// A durable queue's backlog far past its memory budget, on the real broker: the bodies beyond the
/// budget stay on disk only (the broker's memory does not follow the backlog, before or after a
/// restart) and come back in order as a consumer catches up.
@Suite(.serialized) struct DeepBacklogTests {
    static let queue = "backlog"

    /// A data directory and socket for one test, removed (with the config) when it ends.
    final class Scratch {
        let dataDir: String
        let socket: String
        init(_ tag: String) {
            dataDir = TestPaths.dataDirectory(tag)
            socket = TestPaths.socket(tag)
        }
        deinit {
            try? FileManager.default.removeItem(atPath: dataDir)
            try? FileManager.default.removeItem(atPath: dataDir + ".json")
        }
    }

    /// A broker with a small per-queue memory budget and small segments.
    static func broker(_ socket: String, _ dataDir: String, budget: Int) async throws -> BrokerProcess {
        let config = dataDir + ".json"
        try Data(#"{"durableQueueMemoryBytes": \#(budget), "segmentBytes": 1048576}"#.utf8).write(to: URL(fileURLWithPath: config))
        return try await BrokerProcess(arguments: ["--config", config], socketPath: socket, dataDir: dataDir)
    }

    /// The broker's resident memory (VmRSS), in bytes.
    static func residentBytes(_ broker: BrokerProcess) throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(broker.process.pid)/status", encoding: .utf8)
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
            let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true)[1])
        else { throw TestSupportError("no VmRSS in /proc/\(broker.process.pid)/status") }
        return kib * 1024
    }

    static func stat(_ c: RawClient, _ name: String) throws -> UInt64 {
        c.send(.stats(requestID: 90))
        while true {
            if case .statsReply(90, let entries) = try c.readFrame() { return entries.first { $0.name == name }?.value ?? 0 }
        }
    }

    /// (ready messages, bytes on disk) of the queue, from TOPOLOGY.
    static func queueFigures(_ c: RawClient) throws -> (ready: UInt32, disk: UInt64) {
        c.send(.topology(requestID: 91))
        while true {
            if case .topologyReply(91, _, let queues) = try c.readFrame() {
                let q = try #require(queues.first { $0.name == queue })
                return (q.ready, q.diskBytes)
            }
        }
    }

    static func declare(_ c: RawClient) throws {
        c.send(.declareQueue(requestID: 1, name: queue, options: QueueOptions(durable: true)))
        while true { if case .queueOK(1, _) = try c.readFrame() { return } }
    }

    static func payload(_ i: Int, size: Int) -> [UInt8] {
        var p = Array("m\(i) ".utf8)
        while p.count < size { p.append(UInt8(ascii: "a") + UInt8(i % 26)) }
        return p
    }

    /// Publishes messages `range` (persistent unless listed in `transient`) with confirms, in
    /// windows of 500, and waits for every confirm: none may be a nack.
    static func publish(_ c: RawClient, _ range: ClosedRange<Int>, size: Int, transient: Set<Int> = []) throws {
        var sequence: UInt64 = 0
        var confirmed: UInt64 = 0
        var i = range.lowerBound
        while i <= range.upperBound {
            var frames: [UInt8] = []
            let end = min(i + 499, range.upperBound)
            for n in i...end {
                sequence += 1
                frames += Frame.publishTo(
                    flags: PublishFlag.confirm, exchange: "", routingKey: queue,
                    properties: MessageProperties(persistent: !transient.contains(n)), payload: payload(n, size: size)).encoded()
            }
            c.send(frames)
            i = end + 1
            while confirmed < sequence {
                guard case .confirm(let s, let flags) = try c.readFrame() else { continue }
                #expect(flags & AckFlag.nack == 0, "message \(s) was nacked")
                confirmed = s
            }
        }
    }

    /// Consumes `count` messages with manual acks (prefetch 100), acknowledging each: their
    /// payloads' numbers and redelivered flags, in the order received.
    static func consume(_ c: RawClient, count: Int) throws -> [(number: Int, redelivered: Bool)] {
        c.send(.consume(consumerID: 7, queue: queue, flags: ConsumeFlag.manualAck, prefetch: 100))
        var got: [(Int, Bool)] = []
        while got.count < count {
            guard case .message(7, let tag, let flags, _, _, _, _, let body) = try c.readFrame() else { continue }
            let text = String(decoding: body.prefix { $0 != UInt8(ascii: " ") }, as: UTF8.self)
            got.append((Int(text.dropFirst()) ?? -1, flags & AckFlag.redelivered != 0))
            c.send(.ack(deliveryTag: tag, flags: 0))
        }
        return got
    }

    @Test func aBacklogOfManyBudgetsStaysOnDiskAndComesBackInOrderAfterARestart() async throws {
        let scratch = Scratch("backlog")
        defer { withExtendedLifetime(scratch) {} }  // removed when the test ends, not before
        let (dataDir, socket) = (scratch.dataDir, scratch.socket)
        let budget = 64 << 10
        let count = 16_000, size = 1000  // 16 MB: 250 budgets
        let first = try await Self.broker(socket, dataDir, budget: budget)
        let producer = try RawClient.handshaken(socket)
        try Self.declare(producer)
        let before = try Self.residentBytes(first)
        try Self.publish(producer, 1...count, size: size)
        let during = try Self.residentBytes(first)
        let (ready, disk) = try Self.queueFigures(producer)
        #expect(ready == UInt32(count))
        #expect(disk >= UInt64(count * size), "only \(disk) bytes on disk for \(count * size) bytes of payload")
        #expect(try Self.stat(producer, "store_paging_queues") == 1)
        let pagedOut = try Self.stat(producer, "store_paged_out")
        #expect(pagedOut > UInt64(count * 9 / 10))
        // Without paging the bodies alone would add 16 MB (and backpressure would stop the
        // producer at 4 MiB); with it the broker grows by its buffers, not by the backlog.
        print("deep backlog: broker RSS \(before >> 10) KiB before, \(during >> 10) KiB with \((count * size) >> 20) MiB queued, \(pagedOut) of \(count) messages paged out (budget \(budget >> 10) KiB)")
        #expect(during - before < 8 << 20, "RSS grew by \(during - before) bytes with the backlog on disk")
        #expect(await first.stop() == 0)

        // Restarted, the backlog is still on disk only: recovery keeps two bits a message.
        let second = try await Self.broker(socket, dataDir, budget: budget)
        let afterRestart = try Self.residentBytes(second)
        print("deep backlog: broker RSS \(afterRestart >> 10) KiB after restarting over it")
        #expect(afterRestart - before < 8 << 20, "RSS after recovery is \(afterRestart) bytes, \(before) before the backlog")
        let consumer = try RawClient.handshaken(socket)
        let got = try Self.consume(consumer, count: count)
        #expect(got.map(\.number) == Array(1...count), "not in publish order")
        #expect(!got.contains { $0.redelivered }, "never delivered before, yet flagged redelivered")
        let check = try RawClient.handshaken(socket)
        #expect(await eventually(20) { (try? Self.queueFigures(check).ready) == 0 })
        #expect(await eventually(20) { (try? Self.stat(check, "store_paging_queues")) == 0 })
        // Everything acknowledged: the settled segments go (1 MiB each, ~17 were written).
        #expect(await eventually(20) { ((try? Self.stat(check, "store_segments")) ?? 99) <= 3 })
        #expect(await second.stop() == 0)
    }

    @Test func transientMessagesKeepTheirPlaceBehindPagedOnesAndAreGoneAfterARestart() async throws {
        let scratch = Scratch("backlog-order")
        defer { withExtendedLifetime(scratch) {} }  // removed when the test ends, not before
        let (dataDir, socket) = (scratch.dataDir, scratch.socket)
        let broker = try await Self.broker(socket, dataDir, budget: 4096)
        let c = try RawClient.handshaken(socket)
        try Self.declare(c)
        // 200 × 100 bytes is five budgets: the tail of it, and the transient 150, go to disk.
        try Self.publish(c, 1...210, size: 100, transient: [150, 205])
        #expect(try Self.stat(c, "store_paging_queues") == 1)
        let consumer = try RawClient.handshaken(socket)
        #expect(try Self.consume(consumer, count: 210).map(\.number) == Array(1...210))

        // Again, and restart before consuming: the persistent ones come back, the transient do not.
        try Self.publish(c, 1...210, size: 100, transient: [150, 205])
        #expect(await broker.stop() == 0)
        let again = try await Self.broker(socket, dataDir, budget: 4096)
        let after = try RawClient.handshaken(socket)
        #expect(try Self.queueFigures(after).ready == 208)
        #expect(try Self.consume(after, count: 208).map(\.number) == Array(1...210).filter { $0 != 150 && $0 != 205 })
        #expect(await again.stop() == 0)
    }

    /// A request that waited on disk is still a request when read back (PROTOCOL.md §5.13): the
    /// one whose caller left meanwhile is taken out undelivered, like one kept in memory, and the
    /// others are answered.
    @Test func aRequestReadBackFromDiskIsStillARequest() async throws {
        let scratch = Scratch("paged-requests")
        let broker = try await Self.broker(scratch.socket, scratch.dataDir, budget: 4096)
        let probe = try await Peer.connect(to: scratch.socket, name: "probe")
        _ = try await probe.declareQueue(Self.queue, QueueOptions(durable: true))
        func stat(_ name: String) async throws -> UInt64 { try await probe.brokerStats().first { $0.name == name }?.value ?? 0 }
        /// 5 KiB each: more than the queue's whole budget.
        func job(_ name: String) -> [UInt8] { Array(name.utf8) + [UInt8](repeating: 0x2E, count: 5120) }
        // A backlog while nobody consumes: the queue pages, and goes on paging what follows
        // until a consumer has caught up with its region.
        for i in 0..<20 { try await probe.publish(to: "", key: Self.queue, job("filler\(i)"), confirm: true, persistent: true) }
        // A responder held by the first filler: a request has someone to answer it (a request to
        // a queue nobody consumes is refused at once), and the backlog stays on disk.
        let ran = Collector<String>()
        let gate = AsyncGate()
        let responder = try await Peer.connect(to: scratch.socket, name: "responder")
        _ = try await responder.respond(on: Self.queue, prefetch: 1, concurrency: 1) { (r: Request) async throws -> [UInt8] in
            let name = String(decoding: r.payload.prefix { $0 != 0x2E }, as: UTF8.self)
            ran.add(name)
            if name == "filler0" { await gate.wait() }
            return Array("done \(name)".utf8)
        }
        #expect(await eventually { ran.items == ["filler0"] })
        let staying = try await Peer.connect(to: scratch.socket, name: "staying")
        let leaving = try await Peer.connect(to: scratch.socket, name: "leaving")
        let pagedBefore = try await stat("store_paged_out")
        let first = Task { try await staying.request(to: .queue(Self.queue), job("first"), timeout: .seconds(120)).text }
        #expect(try await eventually { try await stat("store_paged_out") == pagedBefore + 1 })
        let abandoned = Task { try await leaving.request(to: .queue(Self.queue), job("abandoned"), timeout: .seconds(120)) }
        #expect(try await eventually { try await stat("store_paged_out") == pagedBefore + 2 })
        let last = Task { try await staying.request(to: .queue(Self.queue), job("last"), timeout: .seconds(120)).text }
        #expect(try await eventually { try await stat("store_paged_out") == pagedBefore + 3 })
        await leaving.close()
        await #expect(throws: EvbusError.self) { _ = try await abandoned.value }

        gate.open()
        #expect(try await first.value == "done first")
        #expect(try await last.value == "done last")
        #expect(ran.items == (0..<20).map { "filler\($0)" } + ["first", "last"], "a request for nobody was run: \(ran.items.suffix(3))")
        #expect(try await stat("requests_caller_gone") == 1)
        for p in [responder, staying, probe] { await p.close() }
        #expect(await broker.stop() == 0)
    }

    @Test func purgingOrDeletingAPagedQueueRemovesWhatIsOnDiskToo() async throws {
        let scratch = Scratch("backlog-purge")
        defer { withExtendedLifetime(scratch) {} }  // removed when the test ends, not before
        let (dataDir, socket) = (scratch.dataDir, scratch.socket)
        let broker = try await Self.broker(socket, dataDir, budget: 4096)
        let c = try RawClient.handshaken(socket)
        try Self.declare(c)
        try Self.publish(c, 1...500, size: 100)
        c.send(.purgeQueue(requestID: 5, name: Self.queue))
        guard case .queueOK(5, let purged) = try c.readFrame() else { throw TestSupportError("purge failed") }
        #expect(purged.messageCount == 500, "PURGE counted \(purged.messageCount) of 500")
        #expect(try Self.queueFigures(c) == (0, 0))
        try Self.publish(c, 501...600, size: 100)
        #expect(await broker.stop() == 0)

        // After a restart only what came after the purge is there.
        let again = try await Self.broker(socket, dataDir, budget: 4096)
        do {
            let consumer = try RawClient.handshaken(socket)
            #expect(try Self.queueFigures(consumer).ready == 100)
            #expect(try Self.consume(consumer, count: 100).map(\.number) == Array(501...600))
        }  // the consumer's connection closes here
        let after = try RawClient.handshaken(socket)
        try Self.publish(after, 601...900, size: 100)
        after.send(.deleteQueue(requestID: 6, name: Self.queue))
        guard case .queueOK(6, let deleted) = try after.readFrame() else { throw TestSupportError("delete failed") }
        #expect(deleted.messageCount == 300)
        #expect(await again.stop() == 0)

        let last = try await Self.broker(socket, dataDir, budget: 4096)
        let check = try RawClient.handshaken(socket)
        check.send(.declareQueue(requestID: 7, name: Self.queue, options: QueueOptions(durable: true), passive: true))
        guard case .error(let code, 7, _) = try check.readFrame() else { throw TestSupportError("the deleted queue came back") }
        #expect(code == .unknownQueue)
        #expect(await last.stop() == 0)
    }
}
