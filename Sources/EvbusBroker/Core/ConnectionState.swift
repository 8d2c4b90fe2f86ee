import EvbusWire

/// What the core knows of one connection: its subscriptions and consumers, the deliveries it has
/// not settled, the requests it accepted, its publisher-confirm numbering and its backpressure
/// links. Created by `BrokerCore.open`, dropped at `BrokerCore.closed`. Loop-bound like the core.
public final class ConnectionState {
    public let id: UInt64
    /// The number outputs and route targets name this connection by. (Declared beside the
    /// Booleans below so they share one word: idle sessions are most of the broker's memory.)
    public let slot: UInt32
    // The properties below marked `@exclusivity(unchecked)` are read for every frame or delivery,
    // one access at a time on the loop thread; their dynamic exclusivity checks showed in the
    // work-queue and request profiles (perf), so they are off.

    /// False once the connection is closing: nothing more is delivered to it or read from it.
    @exclusivity(unchecked) public internal(set) var isOpen = true
    /// Its output passed the high watermark (`BrokerOutput.commit` said so) and has not drained
    /// below the low one since: its consumers get nothing, and the slow-consumer policy applies.
    @exclusivity(unchecked) var outputFull = false
    var subscriptions = Subscriptions()
    /// This connection's queue consumers, by their client-chosen id.
    var consumers: [UInt32: ConsumerRecord] = [:]
    /// Deliveries awaiting ACK/NACK, by delivery tag. Touched once per delivery and per ACK.
    @exclusivity(unchecked) var ledger = UnackedLedger()
    /// Requests this connection accepted (acknowledged) and has not answered yet: (caller's
    /// connection id, correlation id). If it goes, each caller is told `responder-gone`.
    @exclusivity(unchecked) var openRequests: [(caller: UInt64, correlationID: String)] = []
    /// Confirmed publishes are numbered 1, 2, 3... per connection (PROTOCOL.md §5.10).
    @exclusivity(unchecked) var confirmSequence: UInt64 = 0
    /// The highest sequence routed but not yet confirmed: confirmed with one CONFIRM(multiple)
    /// after each batch of frames read, not one frame per publish.
    @exclusivity(unchecked) var confirmPending: UInt64 = 0
    /// The highest confirm sequence answered (confirmed or nacked).
    @exclusivity(unchecked) var confirmAnswered: UInt64 = 0
    /// What it has waiting for the disk; nil until it first needs it (most connections never
    /// touch a durable queue, and idle connections are most of the broker's memory).
    @exclusivity(unchecked) var durable: DurableLink?
    /// How many slow receivers this connection is waiting for (backpressure); reading resumes at
    /// 0. The server stops handing it frames while this is above 0.
    @exclusivity(unchecked) public internal(set) var blockedBy = 0
    /// Publishers paused because this connection is slow: (slot, id) so a reused slot is not confused.
    var blockedPublishers: [PublisherRef] = []
    /// Who it is, as the kernel said at accept.
    public let identity: PeerIdentity
    /// The name it gave in HELLO (for people and for SENDER frames; never for a decision).
    public internal(set) var name = ""
    /// What the access rules let it do (shared with connections of the same uid and groups).
    /// Read for every publish, one access at a time on the loop thread (unchecked as above).
    @exclusivity(unchecked) var grants: Grants
    /// What its uid holds against its quota.
    let usage: UserUsage
    /// It asked in HELLO for SENDER frames (`HelloFlag.senders`).
    var wantsSenders = false
    /// It published into a queue: its identity is kept after it closes, for those messages.
    @exclusivity(unchecked) var publishedToQueue = false
    /// The publisher of the last delivery to it: a delivery from the same one needs no SENDER
    /// check. Read for every delivery (unchecked as above).
    @exclusivity(unchecked) var lastSender: UInt64 = 0
    /// Subscriptions with a slow-consumer policy of their own, or with something counted against
    /// them (deliveries dropped, publishers paused); most have neither, so most connections hold
    /// an empty table.
    var slowStates: [UInt32: SubscriptionSlowState] = [:]
    /// Publishers it was told about with SENDER (bounded, `BrokerCore.announcedLimit`).
    var announcedSenders: Set<UInt64> = []
    /// Messages it published and messages delivered to it, for CONNECTIONS (one add per message,
    /// unchecked as above), and their rates over the last one-second sample.
    @exclusivity(unchecked) var published: UInt64 = 0
    @exclusivity(unchecked) var delivered: UInt64 = 0
    var rates = ConnectionRates()

    init(id: UInt64, slot: UInt32, identity: PeerIdentity, grants: Grants, usage: UserUsage) {
        self.id = id
        self.slot = slot
        self.identity = identity
        self.grants = grants
        self.usage = usage
    }
}

extension ConnectionState {
    /// Deliveries to it held until their log records are written.
    var heldDeliveries: Int { durable?.heldDeliveries ?? 0 }
    var hasConfirmWaits: Bool { durable.map { !$0.confirmWaits.isEmpty } ?? false }

    /// Its `DurableLink`, made on first use.
    func durableLink() -> DurableLink {
        if let link = durable { return link }
        let link = DurableLink()
        durable = link
        return link
    }
}

/// A connection's state that exists only once it touches durable queues.
final class DurableLink {
    /// The log batch the publishes since the last CONFIRM need synced (0 = none: they are
    /// transient, or `sync` is `interval`).
    var storeNeeded: UInt64 = 0
    /// Confirms waiting for the disk, in sequence order.
    var confirmWaits = RingBuffer<ConfirmWait>(capacity: 0)
    /// Deliveries to it held until their log records are written.
    var heldDeliveries = 0
    /// It is in the core's list of connections with confirms waiting.
    var waitsForStore = false
}

/// A connection named so that a reused slot is never mistaken for it.
struct PublisherRef: Equatable {
    var slot: UInt32
    var id: UInt64
}

/// One subscription's own slow-consumer policy (nil: the broker's) and what it cost.
struct SubscriptionSlowState {
    var policy: SlowConsumerPolicy?
    /// Deliveries discarded under `drop`.
    var dropped: UInt64 = 0
    /// Times a publisher was paused for it under `backpressure`.
    var paused: UInt64 = 0
}

/// A connection's message rates, sampled once a second with the queues' (`BrokerCore.sampleRates`).
struct ConnectionRates {
    var sampledPublished: UInt64 = 0
    var sampledDelivered: UInt64 = 0
    var publishRate: UInt32 = 0
    var deliverRate: UInt32 = 0

    mutating func sample(published: UInt64, delivered: UInt64, elapsedNanos: UInt64) {
        let elapsed = max(elapsedNanos, 1)
        publishRate = UInt32(clamping: (published &- sampledPublished) * 1_000_000_000 / elapsed)
        deliverRate = UInt32(clamping: (delivered &- sampledDelivered) * 1_000_000_000 / elapsed)
        sampledPublished = published
        sampledDelivered = delivered
    }
}
