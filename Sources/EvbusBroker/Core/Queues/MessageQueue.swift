public import EvbusWire

/// A queue: ready messages in order, its consumers in round-robin order, its limits and counters.
/// Pure: it decides which message goes to which consumer; the server writes the frames.
/// Loop-bound like the server, so dynamic exclusivity checks on its hot state are off (they cost
/// more than the work itself, as on `BrokerServer`).
public final class MessageQueue {
    public let name: String
    /// The server's slot for it (route targets name queues by slot).
    public let slot: UInt32
    public let options: QueueOptions
    /// The connection an exclusive queue belongs to.
    public let owner: UInt64?
    /// A durable queue's id in the persistence log (never reused); 0 = not recorded there. Read
    /// for every message routed to or delivered from the queue (unchecked, as the counters below).
    @exclusivity(unchecked) public internal(set) var durableID: UInt32 = 0
    /// Bytes of its messages' records in the log (for TOPOLOGY), as recorded and settled.
    @exclusivity(unchecked) public internal(set) var diskBytes: UInt64 = 0
    /// Its messages on disk only, behind the ready ones in memory (a deep backlog); nil = none.
    @exclusivity(unchecked) var paged: PagedRegion?
    /// Whether it keeps a deep backlog on disk: durable, with no length limit (a limit bounds it
    /// already, and its drop-head and reject-publish rules need every message at hand).
    let canPage: Bool

    @exclusivity(unchecked) private var ready = RingBuffer<StoredMessage>()
    @exclusivity(unchecked) public private(set) var readyBytes: UInt64 = 0
    /// Memory the ready messages take (stored bytes, not just payloads): what backpressure watches.
    @exclusivity(unchecked) public private(set) var readyMemory = 0
    /// Publishers paused because this queue holds more than the high watermark: (slot, id).
    var blockedPublishers: [PublisherRef] = []
    @exclusivity(unchecked) public private(set) var consumers: [ConsumerRecord] = []
    @exclusivity(unchecked) private var nextConsumer = 0
    /// Deliveries to manual-ack consumers not yet acknowledged.
    @exclusivity(unchecked) public internal(set) var unacked = 0
    /// An auto-delete queue goes when its last consumer leaves, but only once it has had one.
    public private(set) var hadConsumer = false
    /// (exchange, key) of every explicit binding, to undo them when the queue goes.
    public var bindings: Set<BindingKey> = []
    /// The core has an expiry armed for the head (monotonic ns), 0 = none.
    public var expiryTimerAt: UInt64 = 0
    /// The uid whose connection declared it, for that uid's queue and queued-bytes quotas
    /// (nil: declared by the config or recovered from the log, which count against nobody).
    var declaredBy: UserUsage?

    @exclusivity(unchecked) public var published: UInt64 = 0
    @exclusivity(unchecked) public var delivered: UInt64 = 0
    @exclusivity(unchecked) public var acked: UInt64 = 0
    /// Counters at the last rate sample and the rates computed from them.
    var sample: (published: UInt64, delivered: UInt64, acked: UInt64) = (0, 0, 0)
    public private(set) var rates: (publish: UInt32, deliver: UInt32, ack: UInt32) = (0, 0, 0)

    public struct BindingKey: Hashable {
        public var exchange: String
        public var key: String
        public init(exchange: String, key: String) {
            self.exchange = exchange
            self.key = key
        }
    }

    public init(name: String, slot: UInt32, options: QueueOptions, owner: UInt64?) {
        self.name = name
        self.slot = slot
        self.options = options
        self.owner = owner
        canPage = Self.canPage(options)
    }

    static func canPage(_ options: QueueOptions) -> Bool {
        options.durable && options.maxLength == nil && options.maxBytes == nil
    }

    /// Ready messages in memory.
    public var readyCount: Int { ready.count }
    /// Every ready message: in memory and paged out.
    public var messageCount: Int { ready.count + (paged?.count ?? 0) }
    /// Their payload bytes.
    public var messageBytes: UInt64 { readyBytes &+ (paged?.payloadBytes ?? 0) }
    public var head: StoredMessage? { ready.first }

    // MARK: In

    /// Adds a published message, applying the length limits. Returns false if `reject-publish`
    /// refused it; with `drop-head`, the messages dropped to make room are appended to `dropped`.
    public func enqueue(_ m: StoredMessage, dropped: inout [StoredMessage]) -> Bool {
        if options.overflow == .rejectPublish && wouldOverflow(adding: m) { return false }
        ready.append(m)
        readyBytes &+= UInt64(m.payloadCount)
        readyMemory &+= m.tail.count
        published &+= 1
        if options.maxLength != nil || options.maxBytes != nil {
            while isOverLimit, let head = popReady() { dropped.append(head) }
        }
        return true
    }

    func wouldOverflow(adding m: StoredMessage) -> Bool {
        if let max = options.maxLength, UInt64(ready.count) + 1 > max { return true }
        if let max = options.maxBytes, readyBytes + UInt64(m.payloadCount) > max { return true }
        return false
    }

    private var isOverLimit: Bool {
        if let max = options.maxLength, UInt64(ready.count) > max { return true }
        if let max = options.maxBytes, readyBytes > max { return true }
        return false
    }

    /// Puts unacknowledged messages back at the head, in the order given (their original order),
    /// flagged as redelivered. Limits are not applied: these were already admitted.
    public func requeue(_ messages: [StoredMessage]) {
        for var m in messages.reversed() {
            m.redelivered = true
            readyBytes &+= UInt64(m.payloadCount)
            readyMemory &+= m.tail.count
            ready.prepend(m)
        }
    }

    /// Adds a message recovered from the log, with no limit applied (it was admitted before).
    func restore(_ m: StoredMessage) {
        ready.append(m)
        readyBytes &+= UInt64(m.payloadCount)
        readyMemory &+= m.tail.count
    }

    private func popReady() -> StoredMessage? {
        guard let m = ready.popFirst() else { return nil }
        readyBytes &-= UInt64(m.payloadCount)
        readyMemory &-= m.tail.count
        return m
    }

    /// Removes every ready message, showing each to `each` first; returns how many.
    public func purge(_ each: (StoredMessage) -> Void = { _ in }) -> Int {
        let n = ready.count
        for i in 0..<n { each(ready[i]) }
        ready.removeAll()
        readyBytes = 0
        readyMemory = 0
        return n
    }

    /// Shows every ready message to `body`, head first (cold: compaction).
    func forEachReady(_ body: (StoredMessage) -> Void) {
        for i in 0..<ready.count { body(ready[i]) }
    }

    /// Changes ready messages in place (cold: after a failed write un-marks persisted ones).
    func updateReady(_ body: (inout StoredMessage) -> Void) {
        for i in 0..<ready.count {
            var m = ready[i]
            body(&m)
            ready[i] = m
        }
    }

    // MARK: Out

    public enum Step {
        /// Write this message to this consumer.
        case deliver(StoredMessage, ConsumerRecord)
        /// The head expired (TTL): dead-letter or drop it.
        case expired(StoredMessage)
        /// Nothing to do: empty, or every consumer is full or blocked.
        case idle
    }

    /// Takes the head out of the queue without delivering it (a request whose caller has gone).
    public func dropHead() -> StoredMessage? { popReady() }

    /// The next thing to do at monotonic time `now`: expire the head, or hand it to the next
    /// consumer (round-robin) that has room in its prefetch window.
    @inline(__always)
    public func next(now: @autoclosure () -> UInt64) -> Step {
        guard let head = ready.first else { return .idle }
        if head.expiresAt != 0 && head.expiresAt <= now() {
            return .expired(popReady()!)
        }
        guard let consumer = pickConsumer() else { return .idle }
        let m = popReady()!
        if consumer.manualAck {
            consumer.unacked += 1
            unacked += 1
        }
        delivered &+= 1
        return .deliver(m, consumer)
    }

    @inline(__always)
    private func pickConsumer() -> ConsumerRecord? {
        let n = consumers.count
        guard n > 0 else { return nil }
        for i in 0..<n {
            var index = nextConsumer + i
            if index >= n { index -= n }
            let c = consumers[index]
            if c.hasCapacity {
                nextConsumer = index + 1 == n ? 0 : index + 1
                return c
            }
        }
        return nil
    }

    /// A delivery to `consumer` was acknowledged (or rejected): its window has room again.
    public func settled(_ consumer: ConsumerRecord, acked isAck: Bool) {
        consumer.unacked -= 1
        unacked -= 1
        if isAck { acked &+= 1 }
    }

    // MARK: Consumers

    public func add(_ consumer: ConsumerRecord) {
        consumers.append(consumer)
        hadConsumer = true
    }

    public func remove(_ consumer: ConsumerRecord) {
        consumers.removeAll { $0 === consumer }
        if nextConsumer >= consumers.count { nextConsumer = 0 }
    }

    /// Computes rates from the counters since the last sample, `elapsedNanos` ago.
    func sampleRates(elapsedNanos: UInt64) {
        func rate(_ now: UInt64, _ then: UInt64) -> UInt32 {
            UInt32(clamping: (now &- then) * 1_000_000_000 / max(elapsedNanos, 1))
        }
        rates = (rate(published, sample.published), rate(delivered, sample.delivered), rate(acked, sample.acked))
        sample = (published, delivered, acked)
    }
}
