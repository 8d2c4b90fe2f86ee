public import EvbusWire

/// What replaying a data directory found: the durable topology and the messages still in it.
public struct RecoveredStore {
    public struct Queue {
        public var id: UInt32
        public var name: String
        public var options: QueueOptions
    }

    public struct Binding: Hashable {
        public var queue: UInt32
        public var exchange: String
        public var key: String
    }

    public struct Message {
        public var queue: UInt32
        public var id: UInt64
        public var delivered: Bool
        public var expiresAtMillis: UInt64
        public var tail: [UInt8]
        public var segment: UInt64
        /// Rewritten by compaction into `segment` (its id says nothing of where it is).
        public var moved: Bool
        /// Published as a request (`StoredMessage.isRequest`).
        public var isRequest = false
    }

    /// A durable queue's messages left on disk (docs/DURABILITY.md §4): read back as consumers
    /// come, so a deep backlog costs the restarted broker two bits a message, not its bodies.
    public struct Region {
        public var queue: UInt32
        public var count: Int
        /// Its first message's id and record: the first read starts there.
        public var firstID: UInt64
        public var position: LogPosition
        /// Bytes of its message records, and of their payloads.
        public var bytes: UInt64
        public var payloadBytes: UInt64
    }

    /// Exchanges and queues in the order they were declared.
    public var exchanges: [(name: String, kind: ExchangeKind)] = []
    public var queues: [Queue] = []
    public var bindings: [Binding] = []
    /// Unsettled messages of existing queues loaded into memory, oldest first: those of queues
    /// that do not page (a length limit bounds them) and compaction's copies.
    public var messages: [Message] = []
    /// The other unsettled messages, left on disk, one region per queue.
    public var regions: [Region] = []
    /// Which replayed ids are live and delivered: what reads of the regions go by.
    public var bits: RecoveredBits?
    public var nextMessageID: UInt64 = 1
    /// Above every publisher connection id in the log's messages: the restarted broker numbers
    /// its connections from here, so a restored message is never taken for a new connection's.
    public var nextConnectionID: UInt64 = 1
    public var nextQueueID: UInt32 = 1
    /// Every segment, oldest first, with the first message id recorded in it and its live messages
    /// in memory (those in regions keep their segments by their place, not by a count).
    public var segments: [(number: UInt64, firstID: UInt64, live: Int)] = []
    /// Records of a kind this version does not know, skipped.
    public var unknownRecords = 0
    /// What the log itself cut or skipped.
    public var log = SegmentLog.Recovery()

    public init() {}

    /// Opens the log in `directory` and replays it: once as it opens (topology, and two bits per
    /// message id), then once more through the files to place each live message (in memory, or
    /// in its queue's region on disk) without holding the bodies of those left on disk.
    public static func open(directory: String, segmentBytes: Int) throws(StoreError) -> (SegmentLog, RecoveredStore) {
        var replay = Replay()
        let log = try SegmentLog(directory: directory, segmentBytes: segmentBytes) { body, segment in
            replay.apply(body, segment: segment)
        }
        var recovered = try replay.finish(segments: log.readableSegments())
        recovered.log = log.recovery
        return (log, recovered)
    }
}

/// The replay: records applied in log order.
private struct Replay {
    var exchanges: [String: ExchangeKind] = [:]
    var exchangeOrder: [String] = []
    var queues: [UInt32: RecoveredStore.Queue] = [:]
    var bindings: Set<RecoveredStore.Binding> = []
    var bits = IDBitmap()
    /// Compaction's copies, whole: they are few, and they are kept in memory after a restart.
    var moved: [UInt64: RecoveredStore.Message] = [:]
    /// Per queue, the id ranges purges settled.
    var purged: [UInt32: [ClosedRange<UInt64>]] = [:]
    var maxMessageID: UInt64 = 0
    var maxQueueID: UInt32 = 0
    var unknown = 0

    mutating func apply(_ body: UnsafeRawBufferPointer, segment: UInt64) {
        guard let record = StoreRecord.decode(body) else {
            unknown += 1
            return
        }
        switch record {
        case .topologyReset:
            exchanges.removeAll()
            exchangeOrder.removeAll()
            queues.removeAll()
            bindings.removeAll()
        case .exchange(let name, let kind):
            if exchanges[name] == nil { exchangeOrder.append(name) }
            exchanges[name] = kind
        case .exchangeDeleted(let name):
            exchanges[name] = nil
            exchangeOrder.removeAll { $0 == name }
            bindings = bindings.filter { $0.exchange != name }
        case .queue(let id, let name, let options):
            queues[id] = .init(id: id, name: name, options: options)
            maxQueueID = max(maxQueueID, id)
        case .queueDeleted(let id):
            queues[id] = nil
            bindings = bindings.filter { $0.queue != id }
        case .bound(let queue, let exchange, let key):
            bindings.insert(.init(queue: queue, exchange: exchange, key: key))
        case .unbound(let queue, let exchange, let key):
            bindings.remove(.init(queue: queue, exchange: exchange, key: key))
        case .message(let queue, let id, let delivered, let isMoved, let transient, let request, let expires, let tail):
            maxMessageID = max(maxMessageID, id)
            guard !transient else { return }  // kept its place in a region only while the broker ran
            if isMoved {
                let wasDelivered = delivered || bits.isDelivered(id) || moved[id]?.delivered == true
                bits.setLive(id, false)
                moved[id] = .init(
                    queue: queue, id: id, delivered: wasDelivered, expiresAtMillis: expires, tail: tail, segment: segment, moved: true,
                    isRequest: request)
            } else {
                bits.setLive(id, true)
                if delivered { bits.setDelivered(id, true) }
            }
        case .delivered(_, let ids):
            for id in ids {
                if moved[id] != nil { moved[id]!.delivered = true } else { bits.setDelivered(id, true) }
            }
        case .settled(_, let ids):
            for id in ids {
                moved.removeValue(forKey: id)
                bits.setLive(id, false)
                bits.setDelivered(id, false)
            }
        case .purged(let queue, let from, let through):
            guard from <= through else { return }
            purged[queue, default: []].append(from...through)
            moved = moved.filter { $0.value.queue != queue || !(from...through).contains($0.key) }
        }
    }

    /// Whether a message of `queue` with this id survived: its queue exists and no purge took it.
    func survives(queue: UInt32, id: UInt64) -> Bool {
        guard queues[queue] != nil else { return false }
        guard let ranges = purged[queue] else { return true }
        return !ranges.contains { $0.contains(id) }
    }

    /// The second pass: through the files, placing each live message.
    mutating func finish(segments readable: [ReadableSegment]) throws(StoreError) -> RecoveredStore {
        var r = RecoveredStore()
        r.exchanges = exchangeOrder.map { ($0, exchanges[$0]!) }
        r.queues = queues.values.sorted { $0.id < $1.id }
        r.bindings = bindings.filter { queues[$0.queue] != nil }.sorted { ($0.queue, $0.exchange, $0.key) < ($1.queue, $1.exchange, $1.key) }
        r.nextMessageID = maxMessageID + 1
        r.nextQueueID = maxQueueID + 1
        r.unknownRecords = unknown
        var firstIDs: [UInt64: UInt64] = [:]
        var live: [UInt64: Int] = [:]
        var regions: [UInt32: RecoveredStore.Region] = [:]
        for segment in readable {
            try LogReader.forEachRecord(path: segment.path, from: 0, limit: segment.limit) { body, end in
                guard body.count >= 22, body[0] == StoreRecord.Kind.message.rawValue else { return true }
                if body.count >= 30 {
                    r.nextConnectionID = max(r.nextConnectionID, UInt64(littleEndian: body.loadUnaligned(fromByteOffset: 22, as: UInt64.self)) &+ 1)
                }
                let flags = body[13]
                guard flags & (StoreRecord.MessageFlag.moved | StoreRecord.MessageFlag.transient) == 0 else { return true }
                let queue = UInt32(littleEndian: body.loadUnaligned(fromByteOffset: 1, as: UInt32.self))
                let id = UInt64(littleEndian: body.loadUnaligned(fromByteOffset: 5, as: UInt64.self))
                firstIDs[segment.number] = min(firstIDs[segment.number] ?? .max, id)
                guard bits.isLive(id) else { return true }
                guard survives(queue: queue, id: id) else {
                    bits.setLive(id, false)  // so reads skip it too
                    return true
                }
                let size = LogFormat.recordHeaderSize + body.count
                if MessageQueue.canPage(queues[queue]!.options) {
                    if regions[queue] == nil {
                        regions[queue] = .init(
                            queue: queue, count: 0, firstID: id, position: LogPosition(segment: segment.number, offset: end - size), bytes: 0,
                            payloadBytes: 0)
                    }
                    let payload = (try? MessageTailView(tail: UnsafeRawBufferPointer(rebasing: body[22...])))?.payload.count ?? 0
                    regions[queue]!.count += 1
                    regions[queue]!.bytes += UInt64(size)
                    regions[queue]!.payloadBytes += UInt64(payload)
                } else {
                    r.messages.append(.init(
                        queue: queue, id: id, delivered: bits.isDelivered(id),
                        expiresAtMillis: UInt64(littleEndian: body.loadUnaligned(fromByteOffset: 14, as: UInt64.self)),
                        tail: Array(body[22...]), segment: segment.number, moved: false,
                        isRequest: flags & StoreRecord.MessageFlag.request != 0))
                    live[segment.number, default: 0] += 1
                }
                return true
            }
        }
        for m in moved.values where m.tail.count >= 8 {
            r.nextConnectionID = max(r.nextConnectionID, m.tail.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) } &+ 1)
        }
        for m in moved.values where survives(queue: m.queue, id: m.id) {
            r.messages.append(m)
            live[m.segment, default: 0] += 1
        }
        r.messages.sort { $0.id < $1.id }
        r.regions = regions.values.sorted { $0.queue < $1.queue }
        if !r.regions.isEmpty { r.bits = RecoveredBits(bits, end: r.nextMessageID) }
        // Each segment's first id: the smallest it holds, or (none) the next segment's.
        var next = r.nextMessageID
        var segments: [(number: UInt64, firstID: UInt64, live: Int)] = []
        for s in readable.reversed() {
            let first = min(firstIDs[s.number] ?? next, next)
            segments.append((s.number, first, live[s.number] ?? 0))
            next = first
        }
        r.segments = segments.reversed()
        return r
    }
}
