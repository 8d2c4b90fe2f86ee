import EvbusIO
import Foundation
import Synchronization

/// A broker the benchmark measures evbus against: NATS (through the project's own NATS client,
/// `NATSBench`), Redis (a minimal hand-written RESP pub/sub client over a Unix socket, below: it
/// does no more work than parsing frames, so it flatters Redis slightly compared with evbus's
/// full library) or RabbitMQ (`AMQPClient`).
enum ForeignKind: String {
    case nats, redis, rabbitmq
}

struct ForeignBus {
    let kind: ForeignKind
    let address: String
    static let redisOnly = "ForeignBus's raw client speaks Redis only (NATS: NATSBench, RabbitMQ: AMQPClient)"

    /// A connected, subscribed client whose reader thread feeds `receiver`; returns once subscribed.
    func subscriber(_ subject: String, _ receiver: Receiver) throws -> RawSocket {
        precondition(kind == .redis, Self.redisOnly)
        let s = try RawSocket(address: address)
        s.write(resp(["SUBSCRIBE", subject]))
        let ready = DispatchSemaphore(value: 0)
        Thread.detachNewThread { @Sendable in
            var buf = ReceiveBuffer()
            var signalled = false
            while buf.fill(from: s) { Self.parseRedis(&buf, receiver, &signalled, ready) }
            if !signalled { ready.signal() }
        }
        ready.wait()
        return s
    }

    /// Publishes `count` numbered messages in batches and waits until the broker has processed them.
    func publish(subject: String, count: Int, size: Int, stampEvery: Int = 64) throws {
        precondition(kind == .redis, Self.redisOnly)
        let s = try RawSocket(address: address)
        let box = ReplyCounter()
        Thread.detachNewThread { @Sendable in
            var buf = ReceiveBuffer()
            while buf.fill(from: s) {
                // Count reply lines: Redis answers every PUBLISH with ":n\r\n".
                var i = buf.start
                while let e = buf.crlf(from: i) {
                    box.lines.add(1, ordering: .relaxed)
                    i = e + 2
                }
                buf.start = i
            }
        }
        var payload = [UInt8](repeating: 0x61, count: max(size, 16))
        var batch: [UInt8] = []
        batch.reserveCapacity(1 << 20)
        let header = Array("*3\r\n$7\r\nPUBLISH\r\n$\(subject.utf8.count)\r\n\(subject)\r\n$\(payload.count)\r\n".utf8)
        for i in 0..<count {
            let stamp: UInt64 = i % stampEvery == 0 ? monotonicNanos() : 0
            payload.withUnsafeMutableBytes { p in
                p.storeBytes(of: UInt64(i), toByteOffset: 0, as: UInt64.self)
                p.storeBytes(of: stamp, toByteOffset: 8, as: UInt64.self)
            }
            batch.append(contentsOf: header)
            batch.append(contentsOf: payload)
            batch.append(13)
            batch.append(10)
            if batch.count >= 64 << 10 {
                s.write(batch)
                batch.removeAll(keepingCapacity: true)
            }
        }
        s.write(batch)
        while box.lines.load(ordering: .relaxed) < count { usleep(200) }
    }

    final class ReplyCounter: Sendable {
        let lines = Atomic<Int>(0)
    }

    func resp(_ parts: [String]) -> String {
        "*\(parts.count)\r\n" + parts.map { "$\($0.utf8.count)\r\n\($0)\r\n" }.joined()
    }

    // MARK: Parsers (reader threads)

    /// Redis: arrays of bulk strings / integers; "message" arrays carry the payload third.
    static func parseRedis(_ buf: inout ReceiveBuffer, _ receiver: Receiver, _ signalled: inout Bool, _ ready: DispatchSemaphore) {
        while buf.start < buf.end {
            guard let e = buf.crlf(from: buf.start), buf.storage[buf.start] == UInt8(ascii: "*") else { return }
            let items = buf.number(buf.start + 1, e)
            var p = e + 2
            var kindIsMessage = false
            var payload: Range<Int>?
            for item in 0..<items {
                guard p < buf.end, let le = buf.crlf(from: p) else { return }
                if buf.storage[p] == UInt8(ascii: ":") {
                    p = le + 2
                    continue
                }
                let n = buf.number(p + 1, le)
                guard le + 2 + n + 2 <= buf.end else { return }
                if item == 0 { kindIsMessage = n == 7 && buf.storage[le + 2] == UInt8(ascii: "m") }
                if item == 2 { payload = (le + 2)..<(le + 2 + n) }
                p = le + 2 + n + 2
            }
            if kindIsMessage, let payload {
                receiver.handle(payload: UnsafeRawBufferPointer(rebasing: buf.storage[payload]))
            } else if !signalled {
                signalled = true
                ready.signal()
            }
            buf.start = p
        }
    }
}
