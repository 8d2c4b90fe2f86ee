@testable import EvbusBroker
import EvbusTestSupport
import EvbusWire
import Foundation
import Testing

/// The real broker started over a data directory whose newest segment was cut short or had a byte
/// flipped: it always starts, says what it dropped, and serves every record left intact.
@Suite(.serialized) struct DamagedLogTests {
    static let queue = "kept"

    /// Publishes `count` persistent messages with confirms; returns once all are confirmed.
    static func fill(_ socket: String, count: Int, size: Int = 100) throws {
        let c = try RawClient.handshaken(socket)
        c.send(.declareQueue(requestID: 1, name: queue, options: QueueOptions(durable: true)))
        guard case .queueOK = try c.readFrame() else { throw TestSupportError("declare failed") }
        var frames: [UInt8] = []
        for i in 1...count {
            var payload = Array("m\(i) ".utf8)
            while payload.count < size { payload.append(UInt8(ascii: "x")) }
            frames += Frame.publishTo(flags: PublishFlag.confirm, exchange: "", routingKey: queue,
                                      properties: MessageProperties(persistent: true), payload: payload).encoded()
        }
        c.send(frames)
        while true {
            guard case .confirm(let s, let flags) = try c.readFrame() else { continue }
            #expect(flags & AckFlag.nack == 0)
            if s == UInt64(count) { return }
        }
    }

    /// Takes every message of the queue (auto-ack): waits up to 10 s for `expecting` of them (a
    /// loaded machine is slow), then 0.3 s more for any beyond. Their payloads.
    static func drain(_ socket: String, expecting: Int) throws -> [String] {
        let c = try RawClient.handshaken(socket)
        var tv = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        c.send(.consume(consumerID: 1, queue: queue, flags: 0, prefetch: 0))
        var out: [String] = []
        let start = Date()
        var quietSince = Date()
        while true {
            if let frame = try? c.readFrame() {
                if case .message(_, _, _, _, _, _, _, let payload) = frame { out.append(String(decoding: payload, as: UTF8.self)) }
                quietSince = Date()
                continue
            }
            let waitedFor = out.count >= expecting ? 0.3 : 10
            if Date().timeIntervalSince(out.count >= expecting ? quietSince : start) >= waitedFor { return out }
        }
    }

    /// The message records of a segment file: where each starts and ends, and its payload.
    static func messageRecords(_ path: String) throws -> [(start: Int, end: Int, payload: String)] {
        let bytes = try SegmentLog.readFile(path)
        var out: [(Int, Int, String)] = []
        bytes.withUnsafeBytes { raw in
            var offset = LogFormat.header.count
            while let (body, end) = LogFormat.record(in: raw, at: offset) {
                if case .message(_, _, _, _, _, _, _, let tail)? = StoreRecord.decode(body) {
                    let payload = tail.withUnsafeBytes { String(decoding: (try! MessageTailView(tail: $0)).payload, as: UTF8.self) }
                    out.append((offset, end, payload))
                }
                offset = end
            }
        }
        return out
    }

    @Test func theBrokerStartsOverACutOrCorruptedSegmentAndServesEveryIntactRecord() async throws {
        let original = TestPaths.dataDirectory("damage")
        let socket = TestPaths.socket("damage")
        defer { try? FileManager.default.removeItem(atPath: original) }
        let first = try await BrokerProcess(socketPath: socket, dataDir: original)
        try Self.fill(socket, count: 200)
        #expect(await first.stop() == 0)
        let segments = try FileManager.default.contentsOfDirectory(atPath: original).filter { $0.hasSuffix(".seg") }.sorted()
        let newest = try #require(segments.last)
        let records = try Self.messageRecords(original + "/" + newest)
        try #require(records.count == 200)
        let size = records.last!.end
        var rng = SystemRandomNumberGenerator()
        for round in 0..<12 {
            let dir = TestPaths.dataDirectory("damaged")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            try FileManager.default.copyItem(atPath: original, toPath: dir)
            let path = dir + "/" + newest
            let expected: [String]
            // Round 10 cuts exactly between two records (a crash between writes); the rest at random.
            let damage = round == 10 ? records[100].start : Int.random(in: records[0].start..<size, using: &rng)
            // Which record the damage falls in, and where in it: what a failure must say to be
            // reproduced (the test has failed once without saying it).
            let hit = records.firstIndex { ($0.start..<$0.end).contains(damage) }
            let place = hit.map { "record \($0) (\(records[$0].start)..<\(records[$0].end)), byte \(damage - records[$0].start)" } ?? "between records"
            let what = "round \(round): \(round % 2 == 0 ? "cut" : "byte flipped") at \(damage) of \(size), in \(place)"
            if round % 2 == 0 {
                // Cut: a crash in the middle of a write.
                truncate(path, off_t(damage))
                expected = records.filter { $0.end <= damage }.map(\.payload)
            } else {
                // One flipped byte: only the record holding it is lost.
                var bytes = try SegmentLog.readFile(path)
                bytes[damage] ^= 0x5A
                try Data(bytes).write(to: URL(fileURLWithPath: path))
                expected = records.filter { !($0.start..<$0.end).contains(damage) }.map(\.payload)
            }
            let broker = try await BrokerProcess(socketPath: socket, dataDir: dir)
            let served = try Self.drain(socket, expecting: expected.count)
            #expect(served == expected, "\(what): \(served.count) served, \(expected.count) intact")
            #expect(await broker.stop() == 0)
            // A cut exactly between two records leaves a shorter, intact log: nothing to report.
            let undamaged = expected.count == 200 || (round % 2 == 0 && records.contains { $0.start == damage })
            // The line may still be on its way through the stderr pipe when the exit is seen.
            let logged = await eventually(10) {
                let said = broker.process.stderr
                return said.contains("torn tail") || said.contains("damaged bytes") || undamaged
            }
            #expect(logged, "\(what): no log line about the damage: \(broker.process.stderr)")
        }
    }
}
