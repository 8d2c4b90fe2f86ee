import EvbusTestSupport
import EvbusWire
import Foundation
import Testing

/// The real broker with its data directory on a small filesystem the test makes (a 1 MiB tmpfs)
/// that fills up: persistent publishes are refused with `storage-failed` and nacked, everything
/// else goes on, nothing confirmed is lost, and persisting resumes when space returns.
@Suite(.serialized) struct DiskFullTests {
    final class Publisher {
        let c: RawClient
        var sequence: UInt64 = 0
        var errors: [WireError] = []
        init(_ socket: String) throws { c = try RawClient.handshaken(socket, name: "publisher") }

        /// Publishes one message with confirm; true if confirmed, false if nacked.
        func publish(_ key: String, _ text: String, persistent: Bool) throws -> Bool {
            sequence += 1
            c.send(.publishTo(flags: PublishFlag.confirm, exchange: "", routingKey: key,
                              properties: MessageProperties(persistent: persistent), payload: Array(text.utf8) + [UInt8](repeating: 0x2E, count: 4000)))
            while true {
                switch try c.readFrame() {
                case .confirm(let s, let flags) where s == sequence: return flags & AckFlag.nack == 0
                case .error(let code, _, let message): errors.append(WireError(code, message))
                default: continue
                }
            }
        }

        func request(_ frame: Frame) throws -> Frame {
            c.send(frame)
            while true {
                let f = try c.readFrame()
                if case .confirm = f { continue }
                return f
            }
        }
    }

    @Test func aFullDiskRefusesPersistentPublishesAndLosesNothingConfirmed() async throws {
        try #require(getuid() == 0, "mounting the small filesystem needs root (CI runs as root)")
        let fs = try await SmallFilesystem(size: "1m", tag: "full")
        defer { fs.unmount() }
        let mountPoint = fs.path
        let dataDir = mountPoint + "/data"
        let socket = TestPaths.socket("full")
        var broker = try await BrokerProcess(socketPath: socket, dataDir: dataDir)
        // Leave about 100 KiB free.
        let filler = mountPoint + "/filler"
        try Data(count: max(0, fs.freeBytes - (100 << 10))).write(to: URL(fileURLWithPath: filler))

        let p = try Publisher(socket)
        guard case .queueOK = try p.request(.declareQueue(requestID: 1, name: "dq", options: QueueOptions(durable: true))),
              case .queueOK = try p.request(.declareQueue(requestID: 2, name: "tq"))
        else { throw TestSupportError("declare failed") }
        var confirmed: [String] = []
        var refusedAt: Int?
        for i in 1...200 {
            if try p.publish("dq", "p\(i)", persistent: true) {
                confirmed.append("p\(i)")
            } else {
                refusedAt = i
                break
            }
        }
        try #require(refusedAt != nil, "the disk never filled")
        #expect(confirmed.count > 5)
        // Every later persistent publish is refused at once with the reason; the rest goes on.
        #expect(try p.publish("dq", "refused", persistent: true) == false)
        #expect(p.errors.contains { $0.code == .storageFailed && $0.message.contains("No space left") }, "\(p.errors)")
        #expect(try p.publish("tq", "transient", persistent: false))
        #expect(try p.publish("dq", "transient into the durable queue", persistent: false))
        guard case .error(.storageFailed, 3, _) = try p.request(.declareQueue(requestID: 3, name: "dq2", options: QueueOptions(durable: true))) else {
            Issue.record("durable declaration not refused while the disk is full")
            return
        }
        guard case .statsReply(_, let entries) = try p.request(.stats(requestID: 4)) else { throw TestSupportError("no stats") }
        #expect(entries.first { $0.name == "store_healthy" }?.value == 0)
        #expect(await eventually { broker.process.stderr.contains("cannot persist") })  // read from its pipe as it comes

        // Space returns: within a few probes (one a second) persistent publishes are confirmed again.
        try FileManager.default.removeItem(atPath: filler)
        var resumed = false
        for i in 0..<50 where !resumed {
            if try p.publish("dq", "after \(i)", persistent: true) {
                confirmed.append("after \(i)")
                resumed = true
            } else {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        #expect(resumed, "persisting did not resume when space returned")
        #expect(broker.process.stderr.contains("writable again"))
        #expect(await broker.stop() == 0)

        // After a restart every confirmed persistent message is there, in order.
        broker = try await BrokerProcess(socketPath: socket, dataDir: dataDir)
        let c = try RawClient.handshaken(socket)
        var tv = timeval(tv_sec: 0, tv_usec: 300_000)
        setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        c.send(.consume(consumerID: 1, queue: "dq", flags: 0, prefetch: 0))
        var served: [String] = []
        while let frame = try? c.readFrame() {
            guard case .message(_, _, _, _, _, _, _, let payload) = frame else { continue }
            served.append(String(decoding: payload.prefix { $0 != 0x2E }, as: UTF8.self))
        }
        #expect(served == confirmed, "confirmed \(confirmed.count), served after restart \(served.count)")
        #expect(await broker.stop() == 0)
    }
}
