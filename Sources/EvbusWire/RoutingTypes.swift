/// Values shared by the broker and clients for exchanges, queues and consumers (PROTOCOL.md §6).

/// DECLARE_EXCHANGE flag bits.
public enum ExchangeFlag {
    public static let passive: UInt8 = 0x01
    public static let durable: UInt8 = 0x02
    public static let reserved: UInt8 = 0xFC
}

/// How an exchange chooses queues for a routing key.
public enum ExchangeKind: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// Every bound queue, key ignored.
    case fanout = 1
    /// Queues bound with exactly the routing key.
    case direct = 2
    /// Queues bound with a pattern (`*` one word, `#` zero or more) matching the routing key.
    case topic = 3

    public var description: String {
        switch self {
        case .fanout: "fanout"
        case .direct: "direct"
        case .topic: "topic"
        }
    }

    public init?(name: String) {
        guard let kind = Self.allCases.first(where: { $0.description == name }) else { return nil }
        self = kind
    }
}

/// What a bounded queue does with a message that would exceed `max-length` or `max-bytes`.
public enum OverflowPolicy: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// Drop (or dead-letter) the oldest ready messages to make room.
    case dropHead = 0
    /// Refuse the new message; its publisher is told (a nack with confirms, else a queue-full error).
    case rejectPublish = 1

    public var description: String { self == .dropHead ? "drop-head" : "reject-publish" }

    public init?(name: String) {
        guard let policy = Self.allCases.first(where: { $0.description == name }) else { return nil }
        self = policy
    }
}

/// Everything DECLARE_QUEUE says about a queue. Two declarations of one name must agree on all of
/// it (except `passive`, which only checks that the queue exists).
public struct QueueOptions: Hashable, Sendable {
    /// Only the declaring connection may use the queue; it is deleted when that connection closes.
    public var exclusive = false
    /// Deleted when its last consumer goes (after it has had one).
    public var autoDelete = false
    /// Ready messages kept at most; nil = unbounded.
    public var maxLength: UInt64?
    /// Payload bytes of ready messages kept at most; nil = unbounded.
    public var maxBytes: UInt64?
    public var overflow = OverflowPolicy.dropHead
    /// Milliseconds a message may wait in the queue before it expires; nil = forever.
    public var messageTTL: UInt32?
    /// Survives a broker restart, with its bindings to durable exchanges and its persistent
    /// messages (docs/DURABILITY.md).
    public var durable = false
    /// Where rejected, expired and dropped messages are republished; nil = they are discarded.
    public var deadLetterExchange: String?
    /// The routing key dead letters are republished with; nil = their original key.
    public var deadLetterRoutingKey: String?

    public init(
        exclusive: Bool = false, autoDelete: Bool = false, maxLength: UInt64? = nil, maxBytes: UInt64? = nil,
        overflow: OverflowPolicy = .dropHead, messageTTL: UInt32? = nil, deadLetterExchange: String? = nil,
        deadLetterRoutingKey: String? = nil, durable: Bool = false
    ) {
        self.durable = durable
        self.exclusive = exclusive
        self.autoDelete = autoDelete
        self.maxLength = maxLength
        self.maxBytes = maxBytes
        self.overflow = overflow
        self.messageTTL = messageTTL
        self.deadLetterExchange = deadLetterExchange
        self.deadLetterRoutingKey = deadLetterRoutingKey
    }

    /// DECLARE_QUEUE flag bits.
    public enum Flag {
        public static let exclusive: UInt8 = 0x01
        public static let autoDelete: UInt8 = 0x02
        public static let passive: UInt8 = 0x04
        public static let deadLetter: UInt8 = 0x08
        public static let deadLetterKey: UInt8 = 0x10
        public static let durable: UInt8 = 0x20
        public static let reserved: UInt8 = 0xC0
    }

    /// "Not set" for max-length, max-bytes and TTL on the wire.
    public static let unset64 = UInt64.max
    public static let unset32 = UInt32.max
}

/// What the broker answers to DECLARE_QUEUE, DELETE_QUEUE and PURGE_QUEUE.
public struct QueueInfo: Hashable, Sendable {
    public var name: String
    /// Ready messages (declare), or messages removed (delete, purge).
    public var messageCount: UInt32
    public var consumerCount: UInt32

    public init(name: String, messageCount: UInt32, consumerCount: UInt32) {
        self.name = name
        self.messageCount = messageCount
        self.consumerCount = consumerCount
    }
}

/// PUBLISH_TO flag bits.
public enum PublishFlag {
    /// Return the message (RETURN frame) if it reaches no queue and no subscription.
    public static let mandatory: UInt8 = 0x01
    /// Confirm it (CONFIRM frame) by sequence number; the broker numbers confirmed publishes 1, 2, 3...
    public static let confirm: UInt8 = 0x02
    /// A request (PROTOCOL.md §5.13): needs reply-to and correlation id; the broker answers ROUTED 0
    /// at once if it reached no responder (nothing is queued) and tells the caller if a responder
    /// that accepted it goes away before replying.
    public static let request: UInt8 = 0x04
    /// With `request`: send ROUTED even when responders were reached (scatter-gather needs the
    /// count; a single call only needs to hear "none").
    public static let reportReached: UInt8 = 0x08
    public static let reserved: UInt8 = 0xF0
}

/// Every connection's private reply address: `amq.inbox.<connection id>` on the default exchange.
/// A request the broker refused (PROTOCOL.md §5.13) comes back to its caller as a RETURN with the
/// refusal's code, naming the request by its correlation id, and the reason in this header.
public enum RefusedRequest {
    public static let reasonHeader = "evbus-refused"
}

public enum Inbox {
    public static let prefix = "amq.inbox."
    /// Messages to an inbox arrive as DELIVER frames with this subscription id (never a client's).
    public static let subscriptionID: UInt32 = 0
    static let prefixBytes = Array(prefix.utf8)
    /// `a`: a topic whose first byte is not this is no inbox name.
    public static let prefixFirstByte = UInt8(ascii: "a")

    /// Whether `bytes` starts with `amq.inbox.`.
    public static func hasPrefix(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count >= prefixBytes.count else { return false }
        for (i, b) in prefixBytes.enumerated() where bytes[i] != b { return false }
        return true
    }

    public static func name(connectionID: UInt64) -> String { prefix + String(connectionID) }

    /// The connection id an inbox routing key names, or nil if it is not an inbox name.
    public static func connectionID(_ key: UnsafeRawBufferPointer) -> UInt64? {
        guard key.count > prefixBytes.count, key.count <= prefixBytes.count + 20 else { return nil }
        for (i, b) in prefixBytes.enumerated() where key[i] != b { return nil }
        var id: UInt64 = 0
        for b in key[prefixBytes.count...] {
            guard b >= 0x30 && b <= 0x39 else { return nil }
            let (times10, o1) = id.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times10.addingReportingOverflow(UInt64(b - 0x30))
            guard !o1 && !o2 else { return nil }
            id = sum
        }
        return id
    }

    public static func connectionID(_ name: String) -> UInt64? {
        var name = name
        return name.withUTF8 { connectionID(UnsafeRawBufferPointer($0)) }
    }
}

/// CONSUME flag bits.
public enum ConsumeFlag {
    /// Deliveries stay unacknowledged until ACK/NACK (otherwise they count as acknowledged when sent).
    public static let manualAck: UInt8 = 0x01
    public static let reserved: UInt8 = 0xFE
}

/// Flag bits of ACK, NACK, CONFIRM and MESSAGE.
public enum AckFlag {
    /// ACK/NACK/CONFIRM: every outstanding tag (or sequence) up to and including this one.
    public static let multiple: UInt8 = 0x01
    /// NACK: put the message(s) back in the queue instead of dropping or dead-lettering them.
    public static let requeue: UInt8 = 0x02
    /// CONFIRM: the publish was refused (a bounded queue with reject-publish was full).
    public static let nack: UInt8 = 0x02
    /// MESSAGE: this message was delivered before and not acknowledged.
    public static let redelivered: UInt8 = 0x01
}

/// One exchange in a TOPOLOGY_REPLY.
public struct ExchangeSummary: Hashable, Sendable {
    public var name: String
    public var kind: ExchangeKind
    /// (queue, binding key), sorted.
    public var bindings: [Binding]
    /// Plain subscriptions bound to it (only the default topic exchange has any).
    public var subscriptions: UInt32
    /// Made by the broker (`""` and `amq.*`); survives a restart (declared durable).
    public var builtIn: Bool
    public var durable: Bool

    /// TOPOLOGY_REPLY's per-exchange flag bits.
    public enum Flag {
        public static let builtIn: UInt8 = 0x01
        public static let durable: UInt8 = 0x02
    }

    public struct Binding: Hashable, Sendable {
        public var queue: String
        public var key: String
        public init(queue: String, key: String) {
            self.queue = queue
            self.key = key
        }
    }

    public init(name: String, kind: ExchangeKind, bindings: [Binding], subscriptions: UInt32, builtIn: Bool = false, durable: Bool = false) {
        self.builtIn = builtIn
        self.durable = durable
        self.name = name
        self.kind = kind
        self.bindings = bindings
        self.subscriptions = subscriptions
    }
}

/// One queue in a TOPOLOGY_REPLY. Rates are per second over the broker's last one-second sample.
public struct QueueSummary: Hashable, Sendable {
    public var name: String
    public var exclusive: Bool
    public var autoDelete: Bool
    public var ready: UInt32
    public var readyBytes: UInt64
    public var unacked: UInt32
    public var consumers: UInt32
    public var published: UInt64
    public var delivered: UInt64
    public var acked: UInt64
    public var publishRate: UInt32
    public var deliverRate: UInt32
    public var ackRate: UInt32
    public var durable: Bool
    /// Bytes of its persistent messages' records in the log (durable queues; 0 otherwise).
    public var diskBytes: UInt64

    /// TOPOLOGY_REPLY's per-queue flag bits.
    public enum Flag {
        public static let exclusive: UInt8 = 0x01
        public static let autoDelete: UInt8 = 0x02
        public static let durable: UInt8 = 0x04
    }

    public init(
        name: String, exclusive: Bool, autoDelete: Bool, ready: UInt32, readyBytes: UInt64, unacked: UInt32,
        consumers: UInt32, published: UInt64, delivered: UInt64, acked: UInt64, publishRate: UInt32,
        deliverRate: UInt32, ackRate: UInt32, durable: Bool = false, diskBytes: UInt64 = 0
    ) {
        self.durable = durable
        self.diskBytes = diskBytes
        self.name = name
        self.exclusive = exclusive
        self.autoDelete = autoDelete
        self.ready = ready
        self.readyBytes = readyBytes
        self.unacked = unacked
        self.consumers = consumers
        self.published = published
        self.delivered = delivered
        self.acked = acked
        self.publishRate = publishRate
        self.deliverRate = deliverRate
        self.ackRate = ackRate
    }
}

/// Names of exchanges and queues: 1–255 bytes of ASCII letters, digits, `-`, `_`, `.`, `:` (AMQP's
/// rule, so names are safe in shells, logs and tables). `amq.` is reserved for the broker.
public enum NameRules {
    public static let reservedPrefix = "amq."

    /// Checks a name a client chose; `what` is "exchange" or "queue". Throws `invalid-name`.
    public static func validate(_ name: String, _ what: StaticString) throws(WireError) {
        let bytes = name.utf8
        guard !bytes.isEmpty, bytes.count <= WireFormat.maxTopicBytes else {
            throw WireError(.invalidName, "\(what) name must be 1–255 bytes (got \(bytes.count))")
        }
        for b in bytes {
            let ok = (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
                || b == UInt8(ascii: "-") || b == UInt8(ascii: "_") || b == UInt8(ascii: ".") || b == UInt8(ascii: ":")
            guard ok else {
                throw WireError(.invalidName, "\(what) name \"\(name)\" may contain only letters, digits, '-', '_', '.' and ':'")
            }
        }
    }
}
