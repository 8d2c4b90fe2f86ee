import EvbusTestSupport
import EvbusWire
import Foundation
import Synchronization
import Testing

/// The real `evbus broker` binary SIGKILLed at random moments under a producer publishing
/// persistent messages with confirms and a consumer acknowledging them, restarted each time on the
/// same data directory: every confirmed message is delivered, and the redelivered flag is right.
@Suite(.serialized) struct CrashRecoveryTests {
    /// What the clients saw, across every broker run.
    final class Ledger: Sendable {
        struct State {
            var nextID = 1
            var confirmed = Set<Int>()
            var nacked = 0
            /// Every receipt of each message, in order: its redelivered flag.
            var receipts: [Int: [Bool]] = [:]
        }
        let state = Mutex(State())
    }

    static let queue = "crash_jobs"

    /// Publishes persistent messages with confirms until the connection dies; numbers each message
    /// (its payload is its decimal id) and records which ones the broker confirmed.
    static func produce(_ socket: String, _ ledger: Ledger, stop: Finished) {
        guard let c = try? RawClient.handshaken(socket, name: "producer") else { return }
        var inFlight: [UInt64: Int] = [:]  // sequence -> message id
        var sequence: UInt64 = 0
        var answered: UInt64 = 0
        while !stop.isSet {
            var frames: [UInt8] = []
            for _ in 0..<20 {
                let id = ledger.state.withLock { s in defer { s.nextID += 1 }; return s.nextID }
                sequence += 1
                inFlight[sequence] = id
                frames += Frame.publishTo(
                    flags: PublishFlag.confirm, exchange: "", routingKey: queue,
                    properties: MessageProperties(persistent: true), payload: Array(String(id).utf8)).encoded()
            }
            c.send(frames)
            while answered < sequence {
                guard let frame = try? c.readFrame() else { return }
                guard case .confirm(let s, let flags) = frame else { continue }
                let upTo = flags & AckFlag.multiple != 0 ? s : s
                let ids = (answered + 1...upTo).compactMap { inFlight.removeValue(forKey: $0) }
                ledger.state.withLock { st in
                    if flags & AckFlag.nack != 0 { st.nacked += ids.count } else { st.confirmed.formUnion(ids) }
                }
                answered = upTo
            }
        }
    }

    /// Consumes with manual acks (prefetch 100), acknowledging each message, until the connection
    /// dies or nothing arrives for `idleSeconds`.
    static func consume(_ socket: String, _ ledger: Ledger, idleSeconds: Int = 20) {
        guard let c = try? RawClient.handshaken(socket, name: "consumer") else { return }
        var tv = timeval(tv_sec: idleSeconds, tv_usec: 0)
        setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        c.send(.declareQueue(requestID: 1, name: queue, options: QueueOptions(durable: true)))
        c.send(.consume(consumerID: 1, queue: queue, flags: ConsumeFlag.manualAck, prefetch: 100))
        while let frame = try? c.readFrame() {
            guard case .message(_, let tag, let flags, _, _, _, let props, let payload) = frame else { continue }
            guard props.persistent, let id = Int(String(decoding: payload, as: UTF8.self)) else {
                Issue.record("unexpected message \(payload)")
                continue
            }
            ledger.state.withLock { $0.receipts[id, default: []].append(flags & AckFlag.redelivered != 0) }
            c.send(.ack(deliveryTag: tag, flags: 0))
        }
    }

    /// Runs a blocking client on its own thread (not the test's cooperative pool); the flag says
    /// when it has finished.
    final class Finished: Sendable {
        let flag = Atomic<Bool>(false)
        var isSet: Bool { flag.load(ordering: .acquiring) }
    }

    static func onThread(_ body: @escaping @Sendable () -> Void) -> Finished {
        let done = Finished()
        let t = Thread {
            body()
            done.flag.store(true, ordering: .releasing)
        }
        t.start()
        return done
    }

    /// `paging`: a 4 KiB memory budget, so the backlog the producer builds ahead of the consumer
    /// is mostly on disk only, and every run pages out and reads back while it is killed.
    @Test(arguments: [false, true])
    func confirmedMessagesSurviveTwentyKillsAndRedeliveredFlagsAreRight(paging: Bool) async throws {
        let dataDir = TestPaths.dataDirectory("crash")
        let socket = TestPaths.socket("crash")
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let ledger = Ledger()
        // Small segments: every run also rolls, deletes settled segments and compacts.
        let config = dataDir + ".json"
        let settings = paging ? #"{"segmentBytes": 16384, "durableQueueMemoryBytes": 4096}"# : #"{"segmentBytes": 16384}"#
        try Data(settings.utf8).write(to: URL(fileURLWithPath: config))
        defer { try? FileManager.default.removeItem(atPath: config) }
        let arguments = ["--config", config]
        let declare = try await BrokerProcess(arguments: arguments, socketPath: socket, dataDir: dataDir)
        let setup = try RawClient.handshaken(socket)
        setup.send(.declareQueue(requestID: 1, name: Self.queue, options: QueueOptions(durable: true)))
        guard case .queueOK = try setup.readFrame() else { throw TestSupportError("declare failed") }
        await declare.stop()

        var kills = 0
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<20 {
            let broker = try await BrokerProcess(arguments: arguments, socketPath: socket, dataDir: dataDir)
            let stop = Finished()
            let producer = Self.onThread { Self.produce(socket, ledger, stop: stop) }
            if paging { try await Task.sleep(for: .milliseconds(20)) }  // a backlog first
            let consumer = Self.onThread { Self.consume(socket, ledger) }
            try await Task.sleep(for: .milliseconds(Int.random(in: 30...250, using: &rng)))
            broker.process.signal(SIGKILL)
            _ = await broker.process.waitForExit()
            kills += 1
            stop.flag.store(true, ordering: .releasing)
            // Both clients see the connection end at once (no 20 s timeout): bounded in time.
            #expect(await eventually(10) { producer.isSet && consumer.isSet })
        }
        // A last run with no kill: the consumer takes what is left until the queue is empty.
        let last = try await BrokerProcess(arguments: arguments, socketPath: socket, dataDir: dataDir)
        let consumer = Self.onThread { Self.consume(socket, ledger, idleSeconds: 2) }
        #expect(await eventually(60) { consumer.isSet })
        let check = try RawClient.handshaken(socket)
        check.send(.declareQueue(requestID: 2, name: Self.queue, options: QueueOptions(durable: true), passive: true))
        guard case .queueOK(2, let info) = try check.readFrame() else { throw TestSupportError("passive declare failed") }
        #expect(info.messageCount == 0)
        // Twenty crashes' worth of segments were rolled; with the queue empty, the settled ones are gone.
        check.send(.stats(requestID: 3))
        guard case .statsReply(3, let entries) = try check.readFrame() else { throw TestSupportError("no stats") }
        let segments = entries.first { $0.name == "store_segments" }?.value ?? 0
        #expect(segments > 0 && segments <= 4, "\(segments) segments left for an empty queue")
        #expect(await last.stop() == 0)

        let s = ledger.state.withLock { $0 }
        #expect(kills >= 20)
        #expect(s.confirmed.count > 100, "the producer got too few confirms to prove anything: \(s.confirmed.count)")
        let lost = s.confirmed.filter { s.receipts[$0] == nil }
        #expect(lost.isEmpty, "\(lost.count) confirmed messages were never delivered: \(lost.sorted().prefix(10))")
        // A message received again must be flagged redelivered every time after the first.
        let unflaggedRepeats = s.receipts.filter { $0.value.dropFirst().contains(false) }
        #expect(unflaggedRepeats.isEmpty, "received again without the redelivered flag: \(unflaggedRepeats.keys.sorted().prefix(10))")
        let duplicates = s.receipts.values.filter { $0.count > 1 }.count
        let flaggedFirst = s.receipts.values.filter { $0.first == true }.count
        print("crash test\(paging ? " (paging)" : ""): \(kills) kills, \(s.confirmed.count) confirmed, \(s.nacked) nacked, \(s.receipts.count) delivered, \(duplicates) delivered more than once, \(flaggedFirst) first seen flagged (sent before a kill, not read)")
    }
}
