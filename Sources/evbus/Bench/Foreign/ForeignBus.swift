import EvbusIO
import Foundation
import Synchronization

/// A broker the benchmark can drive with a minimal hand-written client: NATS (text protocol over
/// TCP) or Redis (RESP pub/sub over a Unix socket). The clients do no more work than parsing
/// frames, so they flatter the foreign brokers slightly compared with evbus's full library.
enum ForeignKind: String {
    case nats, redis, rabbitmq
}

struct ForeignBus {
    let kind: ForeignKind
    let address: String
    /// `evbus bench` only runs the work-queue scenarios against RabbitMQ (AMQPClient.swift).
    static let pubSubOnly = "the pub/sub scenarios run against NATS and Redis only"

    /// A connected, subscribed client whose reader thread feeds `receiver`; returns once subscribed.
    func subscriber(_ subject: String, _ receiver: Receiver) throws -> RawSocket {
        let s = try RawSocket(address: address)
        switch kind {
        case .nats:
            s.write("CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB \(subject) 1\r\nPING\r\n")
        case .redis:
            s.write(resp(["SUBSCRIBE", subject]))
        case .rabbitmq:
            preconditionFailure(Self.pubSubOnly)
        }
        let ready = DispatchSemaphore(value: 0)
        let kind = self.kind
        Thread.detachNewThread { @Sendable in
            var buf = ReceiveBuffer()
            var signalled = false
            while buf.fill(from: s) {
                switch kind {
                case .nats: Self.parseNATS(&buf, s, receiver, &signalled, ready)
                case .redis: Self.parseRedis(&buf, receiver, &signalled, ready)
                case .rabbitmq: preconditionFailure(Self.pubSubOnly)
                }
            }
            if !signalled { ready.signal() }
        }
        ready.wait()
        return s
    }

    /// Publishes `count` numbered messages in batches and waits until the broker has processed them.
    func publish(subject: String, count: Int, size: Int, stampEvery: Int = 64) throws {
        let s = try RawSocket(address: address)
        let box = ReplyCounter()
        if kind == .nats { s.write("CONNECT {\"verbose\":false,\"pedantic\":false}\r\n") }
        Thread.detachNewThread { @Sendable in
            var buf = ReceiveBuffer()
            while buf.fill(from: s) {
                // Count reply lines: Redis answers every PUBLISH with ":n\r\n"; NATS answers PING with PONG.
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
        let header: [UInt8]
        switch kind {
        case .nats: header = Array("PUB \(subject) \(payload.count)\r\n".utf8)
        case .redis: header = Array("*3\r\n$7\r\nPUBLISH\r\n$\(subject.utf8.count)\r\n\(subject)\r\n$\(payload.count)\r\n".utf8)
        case .rabbitmq: preconditionFailure(Self.pubSubOnly)
        }
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
        let expected: Int
        if kind == .nats {
            s.write("PING\r\n")
            expected = 1
        } else {
            expected = count
        }
        while box.lines.load(ordering: .relaxed) < expected { usleep(200) }
    }

    final class ReplyCounter: Sendable {
        let lines = Atomic<Int>(0)
    }

    func resp(_ parts: [String]) -> String {
        "*\(parts.count)\r\n" + parts.map { "$\($0.utf8.count)\r\n\($0)\r\n" }.joined()
    }

    // MARK: Parsers (reader threads)

    /// NATS: "MSG <subject> <sid> <n>\r\n<payload>\r\n", plus INFO/PING/PONG lines.
    static func parseNATS(_ buf: inout ReceiveBuffer, _ s: RawSocket, _ receiver: Receiver, _ signalled: inout Bool, _ ready: DispatchSemaphore) {
        while let e = buf.crlf(from: buf.start) {
            let first = buf.storage[buf.start]
            if first == UInt8(ascii: "M") {
                // The payload size is the last token of the line.
                var i = e - 1
                while buf.storage[i] != UInt8(ascii: " ") { i -= 1 }
                let n = buf.number(i + 1, e)
                guard e + 2 + n + 2 <= buf.end else { return }
                receiver.handle(payload: UnsafeRawBufferPointer(rebasing: buf.storage[(e + 2)..<(e + 2 + n)]))
                buf.start = e + 2 + n + 2
            } else {
                if first == UInt8(ascii: "P") && buf.storage[buf.start + 1] == UInt8(ascii: "I") { s.write("PONG\r\n") }
                if first == UInt8(ascii: "P") && buf.storage[buf.start + 1] == UInt8(ascii: "O") && !signalled {
                    signalled = true
                    ready.signal()
                }
                buf.start = e + 2
            }
        }
    }

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
