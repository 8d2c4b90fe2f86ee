import EvbusIO
import Foundation
import Synchronization

/// Just enough AMQP 0-9-1 to drive RabbitMQ through the work-queue scenarios: handshake, queue
/// declare/delete, qos, consume, publish, ack, publisher confirms. Bench-only and blocking; like the
/// NATS and Redis clients it parses no more than it must, which flatters RabbitMQ slightly.
final class AMQPClient: Sendable {
    let socket: RawSocket
    static let channel: UInt16 = 1

    /// Connects as guest/guest to vhost "/" and opens channel 1.
    init(address: String) throws {
        socket = try RawSocket(address: address)
        socket.write(Array("AMQP".utf8) + [0, 0, 9, 1])
        var reader = AMQPReader()
        _ = try reader.expectMethod(socket, 10, 10)  // Connection.Start
        var startOK = AMQPWriter()
        startOK.table()
        startOK.shortString("PLAIN")
        startOK.longString("\u{0}guest\u{0}guest")
        startOK.shortString("en_US")
        socket.write(startOK.method(channel: 0, 10, 11))
        _ = try reader.expectMethod(socket, 10, 30)  // Connection.Tune
        var tuneOK = AMQPWriter()
        tuneOK.u16(2047)
        tuneOK.u32(131_072)
        tuneOK.u16(0)  // no heartbeats during a benchmark
        socket.write(tuneOK.method(channel: 0, 10, 31))
        var open = AMQPWriter()
        open.shortString("/")
        open.shortString("")
        open.u8(0)
        socket.write(open.method(channel: 0, 10, 40))
        _ = try reader.expectMethod(socket, 10, 41)
        var channelOpen = AMQPWriter()
        channelOpen.shortString("")
        socket.write(channelOpen.method(channel: Self.channel, 20, 10))
        _ = try reader.expectMethod(socket, 20, 11)
        self.reader = Mutex(reader)
    }

    /// The handshake's reader, handed to whoever reads next (a synchronous call or a reader thread).
    private let reader: Mutex<AMQPReader>

    private func call(_ frame: [UInt8], expect classID: UInt16, _ methodID: UInt16) throws {
        socket.write(frame)
        try reader.withLock { r in _ = try r.expectMethod(socket, classID, methodID) }
    }

    func declareQueue(_ name: String, durable: Bool = false) throws {
        var w = AMQPWriter()
        w.u16(0)
        w.shortString(name)
        w.u8(durable ? 0x02 : 0)  // bits: passive, durable, exclusive, auto-delete, no-wait
        w.table()
        try call(w.method(channel: Self.channel, 50, 10), expect: 50, 11)
    }

    func deleteQueue(_ name: String) throws {
        var w = AMQPWriter()
        w.u16(0)
        w.shortString(name)
        w.u8(0)
        try call(w.method(channel: Self.channel, 50, 40), expect: 50, 41)
    }

    func confirmSelect() throws {
        var w = AMQPWriter()
        w.u8(0)
        try call(w.method(channel: Self.channel, 85, 10), expect: 85, 11)
    }

    /// Consumes with manual acks and `prefetch`; a reader thread acks every delivery (acks of one
    /// read go out in one write) and counts them in `acked`.
    func consume(_ queue: String, prefetch: UInt16, acked: Receiver) throws {
        var qos = AMQPWriter()
        qos.u32(0)
        qos.u16(prefetch)
        qos.u8(0)
        try call(qos.method(channel: Self.channel, 60, 10), expect: 60, 11)
        var consume = AMQPWriter()
        consume.u16(0)
        consume.shortString(queue)
        consume.shortString("")
        consume.u8(0)
        consume.table()
        try call(consume.method(channel: Self.channel, 60, 20), expect: 60, 21)
        let socket = self.socket
        let handedOver = self.reader.withLock { $0 }
        Thread.detachNewThread { @Sendable in
            var reader = handedOver
            var acks = AMQPWriter()
            while reader.fill(socket) {
                while let frame = reader.next() {
                    // Basic.Deliver: consumer-tag, then the u64 delivery tag.
                    guard frame.type == 1, frame.classID == 60, frame.methodID == 60 else { continue }
                    let tagAt = 4 + 1 + Int(frame.payload[4])
                    var ack = AMQPWriter()
                    ack.bytes.append(contentsOf: frame.payload[tagAt..<(tagAt + 8)])
                    ack.u8(0)
                    acks.bytes.append(contentsOf: ack.method(channel: AMQPClient.channel, 60, 80))
                    acked.count.add(1, ordering: .releasing)
                }
                if !acks.bytes.isEmpty {
                    socket.write(acks.bytes)
                    acks.bytes.removeAll(keepingCapacity: true)
                }
            }
        }
    }

    /// Publishes `count` 16-byte messages to the default exchange in 64 KiB writes. With confirms,
    /// returns once the broker has confirmed them all.
    func publish(queue: String, count: Int, confirm: Bool, persistent: Bool = false, clock: ConfirmClock? = nil, window: UInt64? = nil) throws {
        let clock = clock ?? ConfirmClock()
        if confirm {
            let socket = self.socket
            let handedOver = self.reader.withLock { $0 }
            Thread.detachNewThread { @Sendable in
                var reader = handedOver
                while reader.fill(socket) {
                    while let frame = reader.next() {
                        guard frame.type == 1 && frame.classID == 60 && frame.methodID == 80 else { continue }
                        let tag = frame.payload[4..<12].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                        clock.confirmed(through: tag, nack: false)  // multiple or single, in order
                    }
                }
            }
        }
        var publish = AMQPWriter()
        publish.u16(0)
        publish.shortString("")
        publish.shortString(queue)
        publish.u8(0)
        let method = publish.method(channel: Self.channel, 60, 40)
        var header = AMQPWriter()
        header.u16(60)
        header.u16(0)
        header.u64(16)
        if persistent {
            header.u16(0x1000)  // property flags: delivery-mode only
            header.u8(2)  // persistent
        } else {
            header.u16(0)
        }
        let headerFrame = header.frame(type: 2, channel: Self.channel)
        var batch: [UInt8] = []
        batch.reserveCapacity(1 << 17)
        for i in 0..<count {
            var body = AMQPWriter()
            body.u64(UInt64(i))
            body.u64(0)
            batch.append(contentsOf: method)
            batch.append(contentsOf: headerFrame)
            batch.append(contentsOf: body.frame(type: 3, channel: Self.channel))
            clock.sent(UInt64(i + 1))
            if batch.count >= 64 << 10 || (window != nil && (i + 1) % 256 == 0) {
                socket.write(batch)
                batch.removeAll(keepingCapacity: true)
                if let window { clock.waitForWindow(sent: UInt64(i + 1), window: window) }
            }
        }
        socket.write(batch)
        if confirm {
            while clock.confirmed.load(ordering: .acquiring) < UInt64(count) { usleep(200) }
        }
    }
}

/// Builds AMQP frames (big-endian fields).
struct AMQPWriter {
    var bytes: [UInt8] = []
    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) } }
    mutating func shortString(_ s: String) {
        u8(UInt8(s.utf8.count))
        bytes.append(contentsOf: s.utf8)
    }
    mutating func longString(_ s: String) {
        u32(UInt32(s.utf8.count))
        bytes.append(contentsOf: s.utf8)
    }
    /// An empty field table.
    mutating func table() { u32(0) }

    /// These bytes as the arguments of method class.method, framed.
    func method(channel: UInt16, _ classID: UInt16, _ methodID: UInt16) -> [UInt8] {
        var w = AMQPWriter()
        w.u16(classID)
        w.u16(methodID)
        w.bytes.append(contentsOf: bytes)
        return w.frame(type: 1, channel: channel)
    }

    func frame(type: UInt8, channel: UInt16) -> [UInt8] {
        var w = AMQPWriter()
        w.u8(type)
        w.u16(channel)
        w.u32(UInt32(bytes.count))
        w.bytes.append(contentsOf: bytes)
        w.u8(0xCE)
        return w.bytes
    }
}

/// Splits the byte stream into frames.
struct AMQPReader: Sendable {
    var buffer: [UInt8] = []
    var position = 0

    struct Frame {
        var type: UInt8
        var payload: ArraySlice<UInt8>
        var classID: UInt16 { payload.count >= 4 ? UInt16(payload[payload.startIndex]) << 8 | UInt16(payload[payload.startIndex + 1]) : 0 }
        var methodID: UInt16 { payload.count >= 4 ? UInt16(payload[payload.startIndex + 2]) << 8 | UInt16(payload[payload.startIndex + 3]) : 0 }
    }

    mutating func fill(_ socket: RawSocket) -> Bool {
        if position > 0 {
            buffer.removeFirst(position)
            position = 0
        }
        var chunk = [UInt8](repeating: 0, count: 256 << 10)
        let n = chunk.withUnsafeMutableBytes { socket.read(into: $0, from: 0) }
        buffer.append(contentsOf: chunk[0..<n])
        return n > 0
    }

    /// The next complete frame, its payload re-based to start at index 0.
    mutating func next() -> Frame? {
        guard buffer.count - position >= 7 else { return nil }
        let size = Int(buffer[position + 3]) << 24 | Int(buffer[position + 4]) << 16 | Int(buffer[position + 5]) << 8 | Int(buffer[position + 6])
        guard buffer.count - position >= 7 + size + 1 else { return nil }
        let frame = Frame(type: buffer[position], payload: ArraySlice(Array(buffer[(position + 7)..<(position + 7 + size)])))
        position += 8 + size
        return frame
    }

    /// Reads until the given method arrives (skipping anything else); fails on Connection/Channel.Close.
    mutating func expectMethod(_ socket: RawSocket, _ classID: UInt16, _ methodID: UInt16) throws -> Frame {
        while true {
            while let f = next() {
                guard f.type == 1 else { continue }
                if f.classID == classID && f.methodID == methodID { return f }
                if (f.classID == 10 && f.methodID == 50) || (f.classID == 20 && f.methodID == 40) {
                    throw BenchError("RabbitMQ closed the connection: \(String(decoding: f.payload.dropFirst(7), as: UTF8.self))")
                }
            }
            guard fill(socket) else { throw BenchError("RabbitMQ closed the connection") }
        }
    }
}
