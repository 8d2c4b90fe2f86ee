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
    }

    /// Exchanges and queues in the order they were declared.
    public var exchanges: [(name: String, kind: ExchangeKind)] = []
    public var queues: [Queue] = []
    public var bindings: [Binding] = []
    /// Unsettled messages of existing queues, oldest first.
    public var messages: [Message] = []
    public var nextMessageID: UInt64 = 1
    public var nextQueueID: UInt32 = 1
    /// Every segment, oldest first, with the first message id recorded in it and its live messages.
    public var segments: [(number: UInt64, firstID: UInt64, live: Int)] = []
    /// Records of a kind this version does not know, skipped.
    public var unknownRecords = 0
    /// What the log itself cut or skipped.
    public var log = SegmentLog.Recovery()

    public init() {}

    /// Opens the log in `directory` and replays it.
    public static func open(directory: String, segmentBytes: Int) throws(StoreError) -> (SegmentLog, RecoveredStore) {
        var replay = Replay()
        let log = try SegmentLog(directory: directory, segmentBytes: segmentBytes) { body, segment in
            replay.apply(body, segment: segment)
        }
        var recovered = replay.finish(segments: log.segments)
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
    var messages: [UInt64: RecoveredStore.Message] = [:]
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
        case .message(let queue, let id, let delivered, let moved, let expires, let tail):
            let wasDelivered = delivered || messages[id]?.delivered == true
            messages[id] = .init(
                queue: queue, id: id, delivered: wasDelivered, expiresAtMillis: expires, tail: tail, segment: segment, moved: moved)
            maxMessageID = max(maxMessageID, id)
        case .delivered(_, let ids):
            for id in ids { messages[id]?.delivered = true }
        case .settled(_, let ids):
            for id in ids { messages.removeValue(forKey: id) }
        }
    }

    func finish(segments numbers: [UInt64]) -> RecoveredStore {
        var r = RecoveredStore()
        r.exchanges = exchangeOrder.map { ($0, exchanges[$0]!) }
        r.queues = queues.values.sorted { $0.id < $1.id }
        r.bindings = bindings.filter { queues[$0.queue] != nil }.sorted { ($0.queue, $0.exchange, $0.key) < ($1.queue, $1.exchange, $1.key) }
        r.messages = messages.values.filter { queues[$0.queue] != nil }.sorted { $0.id < $1.id }
        r.nextMessageID = maxMessageID + 1
        r.nextQueueID = maxQueueID + 1
        r.unknownRecords = unknown
        // Each segment's first id: the smallest it holds, or (none) the next segment's.
        var firstIDs: [UInt64: UInt64] = [:]
        var live: [UInt64: Int] = [:]
        for m in messages.values where !m.moved {
            firstIDs[m.segment] = min(firstIDs[m.segment] ?? .max, m.id)
        }
        for m in r.messages { live[m.segment, default: 0] += 1 }
        var next = r.nextMessageID
        var segments: [(number: UInt64, firstID: UInt64, live: Int)] = []
        for n in numbers.reversed() {
            let first = min(firstIDs[n] ?? next, next)
            segments.append((n, first, live[n] ?? 0))
            next = first
        }
        r.segments = segments.reversed()
        return r
    }
}
