import EvbusWire

/// The records of the persistence log (docs/DURABILITY.md §3): what changed in the durable part of
/// the broker, one record per change. A record's body starts with its type byte; numbers are
/// little-endian, strings are `u16 length` + UTF-8 as on the wire.
///
/// The broker core writes them (`RecordWriter`, into the batch it hands the storage thread);
/// recovery reads them back (`decode`).
enum StoreRecord: Equatable {
    /// Everything durable declared before this point is forgotten: the declarations that follow
    /// (a snapshot, written at the start of every segment) are the whole topology.
    case topologyReset
    case exchange(name: String, kind: ExchangeKind)
    case exchangeDeleted(name: String)
    /// `id` names the queue in message records; ids are never reused within a data directory.
    case queue(id: UInt32, name: String, options: QueueOptions)
    case queueDeleted(id: UInt32)
    case bound(queue: UInt32, exchange: String, key: String)
    case unbound(queue: UInt32, exchange: String, key: String)
    /// A persistent message in a durable queue: its id, whether it was delivered before, when it
    /// expires (milliseconds since the Unix epoch, 0 = never), and the stored message (publisher,
    /// exchange, routing key, properties, payload: `MessageTailView`'s layout).
    /// `moved`: a copy written by compaction (an earlier record of the same id is superseded).
    /// `transient`: a transient message written only to keep its place behind paged-out ones
    /// (docs/DURABILITY.md §4); recovery drops it. `request`: published as a request (read back,
    /// it is watched and dropped with its caller gone, as one that stayed in memory).
    case message(
        queue: UInt32, id: UInt64, delivered: Bool, moved: Bool = false, transient: Bool = false, request: Bool = false,
        expiresAtMillis: UInt64, tail: [UInt8])
    /// These messages were handed to a consumer (a restart delivers them flagged redelivered).
    case delivered(queue: UInt32, ids: [UInt64])
    /// These messages left the queue for good (acknowledged, dead-lettered, expired, dropped, purged).
    case settled(queue: UInt32, ids: [UInt64])
    /// Every message of the queue with an id in `from...through` left it: a purge of its paged-out
    /// messages, which are not in memory to be named one by one (those in memory get `settled`).
    case purged(queue: UInt32, from: UInt64, through: UInt64)

    /// The message record's flags byte.
    enum MessageFlag {
        static let delivered: UInt8 = 0x01
        static let moved: UInt8 = 0x02
        static let transient: UInt8 = 0x04
        static let request: UInt8 = 0x08
    }

    enum Kind: UInt8 {
        case topologyReset = 0x01, exchange = 0x02, exchangeDeleted = 0x03, queue = 0x04, queueDeleted = 0x05
        case bound = 0x06, unbound = 0x07
        case message = 0x10, delivered = 0x11, settled = 0x12, purged = 0x13
    }

    /// Decodes one record body; nil for a body that is not a whole record of a known type (written
    /// by a later version, or damage that kept its checksum: both are skipped and counted).
    static func decode(_ body: UnsafeRawBufferPointer) -> StoreRecord? {
        var r = ByteReader(body)
        do {
            guard let kind = Kind(rawValue: try r.u8("type")) else { return nil }
            let record: StoreRecord
            switch kind {
            case .topologyReset:
                record = .topologyReset
            case .exchange:
                let name = try r.string("name")
                guard let kind = ExchangeKind(rawValue: try r.u8("kind")) else { return nil }
                record = .exchange(name: name, kind: kind)
            case .exchangeDeleted:
                record = .exchangeDeleted(name: try r.string("name"))
            case .queue:
                let id = try r.u32("id")
                let name = try r.string("name")
                record = .queue(id: id, name: name, options: try readOptions(&r))
            case .queueDeleted:
                record = .queueDeleted(id: try r.u32("id"))
            case .bound, .unbound:
                let queue = try r.u32("queue")
                let exchange = try r.string("exchange")
                let key = try r.string("key")
                record = kind == .bound ? .bound(queue: queue, exchange: exchange, key: key) : .unbound(queue: queue, exchange: exchange, key: key)
            case .message:
                let queue = try r.u32("queue")
                let id = try r.u64("id")
                let flags = try r.u8("flags")
                let expires = try r.u64("expires")
                let tail = Array(try r.fixed(r.remaining))
                record = .message(
                    queue: queue, id: id, delivered: flags & MessageFlag.delivered != 0, moved: flags & MessageFlag.moved != 0,
                    transient: flags & MessageFlag.transient != 0, request: flags & MessageFlag.request != 0, expiresAtMillis: expires,
                    tail: tail)
            case .delivered, .settled:
                let queue = try r.u32("queue")
                let count = Int(try r.u16("count"))
                var ids: [UInt64] = []
                ids.reserveCapacity(count)
                for _ in 0..<count { ids.append(try r.u64("id")) }
                record = kind == .delivered ? .delivered(queue: queue, ids: ids) : .settled(queue: queue, ids: ids)
            case .purged:
                let queue = try r.u32("queue")
                let from = try r.u64("from")
                record = .purged(queue: queue, from: from, through: try r.u64("through"))
            }
            guard r.remaining == 0 else { return nil }
            return record
        } catch {
            return nil
        }
    }

    private static func readOptions(_ r: inout ByteReader) throws(WireError) -> QueueOptions {
        let flags = try r.u8("flags")
        guard let overflow = OverflowPolicy(rawValue: try r.u8("overflow")) else {
            throw WireError(.malformedFrame, "overflow")
        }
        let maxLength = try r.u64("max length")
        let maxBytes = try r.u64("max bytes")
        let ttl = try r.u32("ttl")
        let dlx = try r.string("dlx")
        let dlrk = try r.string("dlrk")
        return QueueOptions(
            exclusive: false, autoDelete: flags & QueueOptions.Flag.autoDelete != 0,
            maxLength: maxLength == QueueOptions.unset64 ? nil : maxLength,
            maxBytes: maxBytes == QueueOptions.unset64 ? nil : maxBytes, overflow: overflow,
            messageTTL: ttl == QueueOptions.unset32 ? nil : ttl,
            deadLetterExchange: flags & QueueOptions.Flag.deadLetter != 0 ? dlx : nil,
            deadLetterRoutingKey: flags & QueueOptions.Flag.deadLetterKey != 0 ? dlrk : nil, durable: true)
    }
}

/// Appends framed records to a batch buffer: `u32 length`, a `u32` checksum slot (zero: the storage
/// thread fills it in, off the broker's loop), then the body. The message, delivered and settled
/// records are written in place, with no intermediate value: they are the per-message ones.
struct RecordWriter {
    var bytes: [UInt8] = []
    /// Where the last record started, and its queue and kind if it is a delivered or settled
    /// record that more ids may join (consecutive settles of one queue share a record).
    private var openList: (start: Int, queue: UInt32, kind: StoreRecord.Kind)?

    var isEmpty: Bool { bytes.isEmpty }

    /// Bytes a message record takes beyond its stored tail (framing, type, queue, id, flags, expiry).
    static let messageOverhead = LogFormat.recordHeaderSize + 22

    mutating func take() -> [UInt8] {
        openList = nil
        defer { bytes = []; bytes.reserveCapacity(4096) }
        return bytes
    }

    mutating func append(_ record: StoreRecord) {
        switch record {
        case .message(let queue, let id, let delivered, let moved, let transient, let request, let expires, let tail):
            _ = tail.withUnsafeBytes {
                appendMessage(
                    queue: queue, id: id, delivered: delivered, moved: moved, transient: transient, request: request,
                    expiresAtMillis: expires, tail: $0)
            }
            return
        case .delivered(let queue, let ids):
            for id in ids { appendListed(.delivered, queue: queue, id: id) }
            return
        case .settled(let queue, let ids):
            for id in ids { appendListed(.settled, queue: queue, id: id) }
            return
        case .topologyReset, .exchange, .exchangeDeleted, .queue, .queueDeleted, .bound, .unbound, .purged:
            break
        }
        let start = beginRecord()
        switch record {
        case .topologyReset:
            bytes.append(StoreRecord.Kind.topologyReset.rawValue)
        case .exchange(let name, let kind):
            bytes.append(StoreRecord.Kind.exchange.rawValue)
            string(name)
            bytes.append(kind.rawValue)
        case .exchangeDeleted(let name):
            bytes.append(StoreRecord.Kind.exchangeDeleted.rawValue)
            string(name)
        case .queue(let id, let name, let o):
            bytes.append(StoreRecord.Kind.queue.rawValue)
            u32(id)
            string(name)
            var flags: UInt8 = 0
            if o.autoDelete { flags |= QueueOptions.Flag.autoDelete }
            if o.deadLetterExchange != nil { flags |= QueueOptions.Flag.deadLetter }
            if o.deadLetterRoutingKey != nil { flags |= QueueOptions.Flag.deadLetterKey }
            bytes.append(flags)
            bytes.append(o.overflow.rawValue)
            u64(o.maxLength ?? QueueOptions.unset64)
            u64(o.maxBytes ?? QueueOptions.unset64)
            u32(o.messageTTL ?? QueueOptions.unset32)
            string(o.deadLetterExchange ?? "")
            string(o.deadLetterRoutingKey ?? "")
        case .queueDeleted(let id):
            bytes.append(StoreRecord.Kind.queueDeleted.rawValue)
            u32(id)
        case .bound(let queue, let exchange, let key), .unbound(let queue, let exchange, let key):
            if case .bound = record { bytes.append(StoreRecord.Kind.bound.rawValue) } else { bytes.append(StoreRecord.Kind.unbound.rawValue) }
            u32(queue)
            string(exchange)
            string(key)
        case .purged(let queue, let from, let through):
            bytes.append(StoreRecord.Kind.purged.rawValue)
            u32(queue)
            u64(from)
            u64(through)
        case .message, .delivered, .settled:
            break  // written above
        }
        finishRecord(start)
    }

    /// A message record, written in place. Returns the bytes it took.
    @discardableResult
    mutating func appendMessage(
        queue: UInt32, id: UInt64, delivered: Bool, moved: Bool = false, transient: Bool = false, request: Bool = false,
        expiresAtMillis: UInt64, tail: UnsafeRawBufferPointer
    ) -> Int {
        let start = beginRecord()
        bytes.append(StoreRecord.Kind.message.rawValue)
        u32(queue)
        u64(id)
        bytes.append(
            (delivered ? StoreRecord.MessageFlag.delivered : 0) | (moved ? StoreRecord.MessageFlag.moved : 0)
                | (transient ? StoreRecord.MessageFlag.transient : 0) | (request ? StoreRecord.MessageFlag.request : 0))
        u64(expiresAtMillis)
        bytes.append(contentsOf: tail)
        finishRecord(start)
        return bytes.count - start
    }

    /// Adds `id` to a delivered or settled record of `queue`: the open one if the last record is
    /// such a record with room, else a new one.
    @inline(__always)
    mutating func appendListed(_ kind: StoreRecord.Kind, queue: UInt32, id: UInt64) {
        if let open = openList, open.queue == queue, open.kind == kind {
            let countAt = open.start + LogFormat.recordHeaderSize + 5
            let count = UInt16(bytes[countAt]) | UInt16(bytes[countAt + 1]) << 8
            if count < UInt16.max {
                u64(id)
                let newCount = count + 1
                bytes[countAt] = UInt8(newCount & 0xFF)
                bytes[countAt + 1] = UInt8(newCount >> 8)
                setLength(at: open.start)
                return
            }
        }
        let start = beginRecord()
        bytes.append(kind.rawValue)
        u32(queue)
        u16(1)
        u64(id)
        finishRecord(start)
        openList = (start, queue, kind)
    }

    // MARK: Framing

    private mutating func beginRecord() -> Int {
        openList = nil
        let start = bytes.count
        bytes.append(contentsOf: [0, 0, 0, 0, 0, 0, 0, 0])
        return start
    }

    private mutating func finishRecord(_ start: Int) { setLength(at: start) }

    private mutating func setLength(at start: Int) {
        let length = UInt32(bytes.count - start - LogFormat.recordHeaderSize)
        bytes[start] = UInt8(length & 0xFF)
        bytes[start + 1] = UInt8((length >> 8) & 0xFF)
        bytes[start + 2] = UInt8((length >> 16) & 0xFF)
        bytes[start + 3] = UInt8(length >> 24)
    }

    private mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    private mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    private mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    private mutating func string(_ s: String) {
        var s = s
        s.withUTF8 { utf8 in
            u16(UInt16(utf8.count))
            bytes.append(contentsOf: UnsafeRawBufferPointer(utf8))
        }
    }
}
