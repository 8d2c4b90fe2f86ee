public import EvbusWire

/// The broker's rules, as a state machine with no I/O.
///
/// It owns the topology (exchanges, queues, bindings, plain subscriptions), every connection's
/// session (consumers, unacknowledged deliveries, open requests, confirms, backpressure links)
/// and the counters. It changes only in response to its inputs, the methods below: a connection
/// opened, a frame it sent, the end of a batch of its frames, its output draining, it closing or
/// closed, a timer. It answers only through `output`: bytes to a connection, pause or resume a
/// connection's input, close a connection, wake me at this time, a log line. Every change of a
/// queue's state therefore passes through this type, which is where persistence will record it
/// and access control will check it.
///
/// Time comes from `clock`, so the rules that depend on it (TTL) are tested without sleeping.
/// Loop-bound: every input must come from one thread, one at a time.
public final class BrokerCore<Output: BrokerOutput> {
    public let settings: CoreSettings
    public let clock: BrokerClock
    /// The output owns the core and outlives it (the server, or a test's memory output), so it is
    /// held unretained, and used through `output`, which borrows it without a retain and release
    /// per call (those showed as 15% of the fan-out benchmark).
    private let outputRef: Unmanaged<Output>

    /// The output, for the cold paths.
    var output: Output { outputRef.takeUnretainedValue() }

    /// `output.reserve`, with the output borrowed rather than retained (the hot paths).
    @inline(__always)
    func reserve(_ slot: UInt32, _ count: Int) -> UnsafeMutableRawPointer {
        outputRef._withUnsafeGuaranteedRef { $0.reserve(slot, count) }
    }

    /// `output.commit`, with the output borrowed rather than retained (the hot paths).
    @inline(__always)
    func commit(_ slot: UInt32, _ count: Int) -> Bool {
        outputRef._withUnsafeGuaranteedRef { $0.commit(slot, count) }
    }

    /// Read and bumped on every publish and delivery, one access at a time on the loop thread;
    /// the dynamic exclusivity check cost more than the increment (perf), so it is off.
    @exclusivity(unchecked) public internal(set) var stats = BrokerStats()
    /// Exchanges, queues and bindings; `topology.defaultTopic` also holds plain subscriptions.
    public let topology = Topology()
    /// Access rules and quotas (docs/SECURITY.md); none until `installAccess`.
    public let access = AccessControl()
    let defaultTopicName = Array("amq.topic".utf8)

    /// Indexed by slot, the number routing targets and outputs use; freed slots are reused.
    private(set) var sessions: [ConnectionState?] = []
    /// The same sessions unretained, for the lookup made for every delivery (a strong read costs
    /// an atomic retain and release each time). Safe: set and cleared together with `sessions`,
    /// which keeps each alive while its slot is in use.
    @exclusivity(unchecked) private var sessionRefs: [Unmanaged<ConnectionState>?] = []
    private var freeSlots: [UInt32] = []
    /// Connection id → slot, for inboxes (`amq.inbox.<id>`).
    var slotsByID: [UInt64: UInt32] = [:]
    public private(set) var liveSessions = 0
    private var nextConnectionID: UInt64 = 1

    // Scratch state of the queue paths, reused so a message costs no allocation here. Each is
    // touched once or more per queued message or ACK, always by one access at a time on the loop
    // thread (no closure that could re-enter the core runs while one is open); the dynamic
    // exclusivity checks on them were 3% of the work-queue benchmark's broker time (perf), so
    // they are off.
    @exclusivity(unchecked) var droppedScratch: [StoredMessage] = []
    @exclusivity(unchecked) var settledScratch: [UnackedLedger.Settled] = []
    @exclusivity(unchecked) var touchedQueues: [MessageQueue] = []
    /// A queue whose consumers' ACKs made room during this read batch (see `ack`).
    @exclusivity(unchecked) var pendingDispatch: MessageQueue?
    /// The route of a publish to an inbox, rewritten in place for each one (see `publishTo`).
    @exclusivity(unchecked) var inboxRoute = [RouteTarget(connection: 0, subscription: Inbox.subscriptionID)]
    /// The persistence log's bookkeeping; nil when the broker keeps everything in memory. Touched
    /// for every delivery from a durable queue, one access at a time on the loop thread; its
    /// dynamic exclusivity checks showed in the durable work-queue profile (perf), so they are off.
    @exclusivity(unchecked) var store: DurableState?
    // The three below are read for every publish or batch, one access at a time on the loop
    // thread; their dynamic exclusivity checks cost 1.5% of the transient work-queue benchmark's
    // broker time (perf), so they are off.

    /// `store != nil`, as a plain flag: comparing the optional struct with nil copied it (perf).
    @exclusivity(unchecked) var isPersisting = false
    /// Set by `deliver` when a durable queue could not take a persistent message (the disk failed).
    @exclusivity(unchecked) var storageRefusedBy: MessageQueue?
    /// Set by `deliver` when a queue refused a message for its declarer's queued-bytes quota.
    @exclusivity(unchecked) var quotaRefusedBy: MessageQueue?
    /// Set by `deliver` when it recorded a persistent message (its confirm waits for the sync).
    @exclusivity(unchecked) var recordedMessage = false
    /// Set with it when the message went to a queue's region on disk (its confirm waits for the
    /// sync in either sync mode).
    @exclusivity(unchecked) var pagedOutMessage = false
    var expiries = ExpiryTimers()
    /// Who closed publishers were, for the messages they left in queues (SENDER frames).
    var retiredSenders = RetiredSenders()
    /// The wake-up last asked of the output (0 = none).
    var wakeRequested: UInt64 = 0
    private var lastRateSample: UInt64

    public init(settings: CoreSettings, clock: BrokerClock = .monotonic, output: Output) {
        self.settings = settings
        self.clock = clock
        outputRef = Unmanaged.passUnretained(output)
        lastRateSample = clock.now()
    }

    // MARK: Connections

    /// A connection was accepted: it gets a session, a slot and an id (the one WELCOME announces).
    /// `identity` is what the kernel says it is; its grants and quota follow from it.
    public func open(identity: PeerIdentity = .unknown) -> ConnectionState {
        let slot: UInt32
        if let reused = freeSlots.popLast() {
            slot = reused
        } else {
            slot = UInt32(sessions.count)
            sessions.append(nil)
            sessionRefs.append(nil)
        }
        let usage = access.usage(of: identity)
        usage.connections += 1
        let session = ConnectionState(
            id: nextConnectionID, slot: slot, identity: identity, grants: access.grants(for: identity), usage: usage)
        nextConnectionID += 1
        sessions[Int(slot)] = session
        sessionRefs[Int(slot)] = Unmanaged.passUnretained(session)
        slotsByID[session.id] = slot
        liveSessions += 1
        stats.connectionsTotal += 1
        return session
    }

    /// Connection ids below `next` are taken (by publishers of messages restored from the log).
    func reserveConnectionIDs(below next: UInt64) {
        nextConnectionID = max(nextConnectionID, next)
    }

    /// The connection is closing (a protocol error, its CLOSE, the broker shutting down): nothing
    /// more is delivered to it. Its state is released when it has `closed`.
    public func closing(_ s: ConnectionState) {
        s.isOpen = false
    }

    /// The connection is gone: its subscriptions end, its unacknowledged deliveries go back to
    /// their queues, its exclusive and auto-delete queues go, its callers are told, and the
    /// publishers it was holding back resume.
    public func closed(_ s: ConnectionState) {
        guard sessions[Int(s.slot)] === s else { return }
        s.isOpen = false
        topology.defaultTopic.topics.removeAll(connection: s.slot, subscriptions: s.subscriptions)
        s.usage.subscriptions -= s.subscriptions.count
        s.subscriptions.removeAll()
        releaseQueues(of: s)
        abandonRequests(of: s)
        releasePublishers(blockedOn: s)
        if s.publishedToQueue { retiredSenders.retire(s.id, identity: s.identity, name: s.name) }
        sessionRefs[Int(s.slot)] = nil
        sessions[Int(s.slot)] = nil
        slotsByID[s.id] = nil
        freeSlots.append(s.slot)
        liveSessions -= 1
        s.usage.connections -= 1
        access.release(s.usage)
        if isPersisting { submitRecords() }
    }

    /// The connection said HELLO: it has a name and says whether it wants SENDER frames, and is admitted if its uid's connection quota
    /// allows (otherwise the server closes it with this error).
    public func hello(_ s: ConnectionState, name: String, flags: UInt8 = 0) throws(WireError) {
        s.name = name
        s.wantsSenders = flags & HelloFlag.senders != 0
        if let limit = s.usage.quota?.connections, s.usage.connections > limit {
            stats.quotaRefusals += 1
            output.log(.warning, s.slot, event: "quota-refused", "refused: uid \(s.identity.uid) already holds \(s.usage.connections - 1) connections, its quota")
            throw WireError(.tooManyConnections, "uid \(s.identity.uid) already holds \(limit) connections, the most its quota allows")
        }
    }

    /// Runs `body` with the session in `slot`, if there is one, borrowed without a retain. Hot path.
    @inline(__always)
    func withSession(_ slot: UInt32, _ body: (ConnectionState) -> Void) {
        sessionRefs[Int(slot)]?._withUnsafeGuaranteedRef(body)
    }

    /// The session in `slot`, if any (cold paths).
    func session(_ slot: UInt32) -> ConnectionState? { sessions[Int(slot)] }

    // MARK: Frames

    /// One frame from an open connection (after its handshake). Requests the core refuses are
    /// answered with ERROR and leave the connection open; a protocol violation throws, and the
    /// server then closes that connection alone.
    @inline(__always)
    public func received(_ frame: RawFrame, from s: ConnectionState) throws(WireError) {
        switch frame.type {
        case .publish:
            publish(try PublishView(body: frame.body), from: s)
        case .publishTo:
            try publishTo(try PublishToView(body: frame.body), from: s)
        case .ack:
            let view = try AckView(body: frame.body, isNack: false)
            ack(view.deliveryTag, multiple: view.flags & AckFlag.multiple != 0, from: s)
        case .nack:
            let view = try AckView(body: frame.body, isNack: true)
            nack(view.deliveryTag, flags: view.flags, from: s)
        case .hello:
            throw WireError(.unexpectedFrame, "HELLO was already sent on this connection")
        case .welcome, .error, .ok, .deliver, .sender, .statsReply, .topologyReply, .connectionsReply, .queueOK, .message, .confirm,
            .returned, .routed:
            throw WireError(.unexpectedFrame, "\(frame.type.name) frames are sent by the broker, not by clients")
        case .ping, .pong, .close, .subscribe, .unsubscribe, .stats, .topology, .connections, .declareExchange, .deleteExchange,
            .declareQueue, .deleteQueue, .purgeQueue, .bind, .unbind, .consume, .cancel:
            handleControl(try Frame.decode(type: frame.type, body: frame.body), from: s)
        }
    }

    /// The cold frames, decoded.
    private func handleControl(_ frame: Frame, from s: ConnectionState) {
        switch frame {
        case .subscribe(let id, let pattern, let policy):
            answer(s, id) { () throws(WireError) in
                try subscribe(s, id: id, pattern: pattern, policy: policy)
                return .ok(requestID: id)
            }
        case .unsubscribe(let id):
            answer(s, id) { () throws(WireError) in
                guard let pattern = s.subscriptions.remove(id) else {
                    throw WireError(.unknownSubscription, "no subscription with id \(id) on this connection")
                }
                s.usage.subscriptions -= 1
                s.slowStates[id] = nil
                topology.defaultTopic.topics.unsubscribe(pattern, RouteTarget(connection: s.slot, subscription: id))
                return .ok(requestID: id)
            }
        case .ping(let token):
            // PONG means "everything before the PING is handled": what this batch's ACKs and
            // confirmed publishes owe goes out before it, not at the end of the batch.
            flushConfirms(s)
            flushPendingDispatch()
            send(.pong(token: token), to: s)
        case .pong:
            break
        case .stats(let requestID):
            send(.statsReply(requestID: requestID, entries: statEntries()), to: s)
        case .close:
            s.isOpen = false
            output.close(s.slot, graceNanos: 2_000_000_000)
        case .topology(let id):
            let (exchanges, queues) = topology.summaries()
            send(.topologyReply(requestID: id, exchanges: exchanges, queues: queues), to: s)
        case .connections(let id):
            send(.connectionsReply(requestID: id, connections: connectionSummaries(for: s)), to: s)
        case .declareExchange, .deleteExchange, .declareQueue, .deleteQueue, .purgeQueue, .bind, .unbind, .consume, .cancel:
            handleRouting(frame, from: s)
        case .hello, .welcome, .error, .ok, .publish, .deliver, .sender, .statsReply, .topologyReply, .connectionsReply, .queueOK,
            .publishTo, .message, .ack, .nack, .confirm, .returned, .routed:
            break  // routed by `received` before decoding
        }
    }

    /// The end of one batch of frames read from `s`: one CONFIRM for every publish confirmed in
    /// it, and one dispatch for the room its ACKs made.
    public func endOfBatch(_ s: ConnectionState) {
        flushConfirms(s)
        flushPendingDispatch()
        if isPersisting { submitRecords() }
    }

    /// `s`'s output drained below the low watermark.
    public func becameWritable(_ s: ConnectionState) {
        releasePublishers(blockedOn: s)
        unblockConsumers(of: s)
    }

    // MARK: Subscriptions

    func subscribe(_ s: ConnectionState, id: UInt32, pattern: String, policy: UInt8 = SlowPolicyCode.brokerDefault) throws(WireError) {
        guard id != Inbox.subscriptionID else {
            throw WireError(.duplicateSubscription, "subscription id 0 is reserved: DELIVER frames with id 0 are replies to this connection's inbox")
        }
        guard s.subscriptions.count < settings.maxSubscriptionsPerConnection || s.subscriptions.contains(id) else {
            throw WireError(.tooManySubscriptions, "this connection already holds \(s.subscriptions.count) subscriptions, the limit")
        }
        guard !s.subscriptions.contains(id) else {
            throw WireError(.duplicateSubscription, "subscription id \(id) is already in use on this connection")
        }
        guard s.consumers[id] == nil else {
            throw WireError(.duplicateSubscription, "id \(id) is already in use by a consumer on this connection")
        }
        try TopicRules.validatePattern(pattern)
        guard s.grants.maySubscribe(pattern) else {
            throw refusedAccess(s, "subscribe to \"\(pattern)\"")
        }
        if let limit = s.usage.quota?.subscriptions, s.usage.subscriptions >= limit {
            throw refusedQuota(s, "uid \(s.identity.uid) holds \(s.usage.subscriptions) subscriptions, the most its quota allows")
        }
        try topology.defaultTopic.topics.subscribe(pattern, RouteTarget(connection: s.slot, subscription: id))
        s.subscriptions.insert(id, pattern: pattern)
        s.usage.subscriptions += 1
        if let own = SlowConsumerPolicy(code: policy) { s.slowStates[id] = SubscriptionSlowState(policy: own) }
    }

    // MARK: Output helpers

    /// Encodes and queues one frame (cold paths; the hot ones write in place).
    func send(_ frame: Frame, to s: ConnectionState) {
        let bytes = frame.encoded()
        bytes.withUnsafeBytes { raw in
            output.reserve(s.slot, raw.count).copyMemory(from: raw.baseAddress!, byteCount: raw.count)
        }
        _ = output.commit(s.slot, bytes.count)
    }

    /// Runs one request; its reply, or its refusal, goes back under the request's id.
    func answer(_ s: ConnectionState, _ id: UInt32, _ body: () throws(WireError) -> Frame) {
        do {
            send(try body(), to: s)
        } catch {
            refuse(error, requestID: id, to: s)
        }
    }

    /// Refuses one request; the connection stays open.
    func refuse(_ error: WireError, requestID: UInt32, to s: ConnectionState) {
        stats.rejectedRequests += 1
        output.log(.info, s.slot, event: "request-refused", "refused request \(requestID): \(error)")
        send(.error(code: error.code, requestID: requestID, message: error.message), to: s)
    }

    // MARK: Time

    /// The time asked for with `output.wake(at:)` has come: expire what is due.
    public func timerFired() {
        wakeRequested = 0
        let now = clock.now()
        while let due = expiries.popDue(now) {
            guard let q = topology.queues[Int(due.queueSlot)], ObjectIdentifier(q) == due.queue,
                q.expiryTimerAt == due.deadline
            else { continue }
            q.expiryTimerAt = 0
            dispatch(q)
        }
        if isPersisting {
            probeIfDue(now: now)
            submitRecords()
        }
        requestWake()
    }

    /// Asks the output for a wake-up at the earliest pending expiry, if it changed.
    func requestWake() {
        var next = expiries.earliest ?? 0
        if let probe = store?.probeAt, probe != 0, next == 0 || probe < next { next = probe }
        guard next != wakeRequested else { return }
        wakeRequested = next
        output.wake(at: next)
    }

    /// Updates every queue's rates from its counters (the server calls it about once a second).
    public func sampleRates() {
        let now = clock.now()
        topology.sampleRates(elapsedNanos: now - lastRateSample)
        for case let c? in sessions { c.rates.sample(published: c.published, delivered: c.delivered, elapsedNanos: now - lastRateSample) }
        if isPersisting { store!.sampleRates(elapsedNanos: now - lastRateSample) }
        lastRateSample = now
    }

    /// Every open connection `asker` may see (CONNECTIONS, PROTOCOL.md §5.5): all of them when
    /// no access rule limits it (or it is root), else those of its own uid: on a shared bus, who
    /// else runs what is not everyone's business.
    func connectionSummaries(for asker: ConnectionState) -> [ConnectionSummary] {
        let seesAll = asker.grants.allowsEverything || asker.identity.uid == 0
        var out: [ConnectionSummary] = []
        for case let c? in sessions where c.isOpen && (seesAll || c.identity.uid == asker.identity.uid) {
            out.append(ConnectionSummary(
                id: c.id, name: c.name, pid: Int32(bitPattern: c.identity.pid), uid: c.identity.uid, gid: c.identity.gid,
                outputFull: c.outputFull, paused: c.blockedBy > 0, bytesQueued: UInt64(output.bufferedBytes(c.slot)),
                published: c.published, delivered: c.delivered, publishRate: c.rates.publishRate, deliverRate: c.rates.deliverRate,
                unacked: UInt32(clamping: c.consumers.values.reduce(0) { $0 + $1.unacked }),
                subscriptions: c.subscriptions.map(\.pattern).sorted(), consumers: c.consumers.values.map(\.queue.name).sorted()))
        }
        return out.sorted { $0.id < $1.id }
    }

    // MARK: Counters

    /// The counters the server adds to its own (`protocolErrors`).
    public func countProtocolError() { stats.protocolErrors += 1 }

    public func statEntries() -> [StatEntry] {
        stats.entries(
            connections: liveSessions, subscriptions: topology.defaultTopic.topics.subscriptionCount,
            exchanges: topology.exchanges.count, queues: topology.liveQueues.count) + storeEntries() + subscriptionEntries()
    }

    /// `subscription.<connection id>.<subscription id>.dropped` and `.paused`, for every live
    /// subscription that has dropped a delivery or paused a publisher (PROTOCOL.md §8).
    func subscriptionEntries() -> [StatEntry] {
        var out: [StatEntry] = []
        for case let s? in sessions where !s.slowStates.isEmpty {
            for (id, state) in s.slowStates.sorted(by: { $0.key < $1.key }) where state.dropped > 0 || state.paused > 0 {
                out.append(StatEntry("subscription.\(s.id).\(id).dropped", state.dropped))
                out.append(StatEntry("subscription.\(s.id).\(id).paused", state.paused))
            }
        }
        return out
    }
}
