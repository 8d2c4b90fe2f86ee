public import EvbusWire

/// The broker's counters. Kept on the loop thread; sent to clients in STATS_REPLY.
public struct BrokerStats: Sendable, Equatable {
    public var connectionsTotal: UInt64 = 0
    public var published: UInt64 = 0
    public var delivered: UInt64 = 0
    /// Published messages no subscription matched.
    public var unroutable: UInt64 = 0
    /// Deliveries discarded by the `drop` policy.
    public var dropped: UInt64 = 0
    /// Connections closed by the `disconnect` policy.
    public var slowConsumerDisconnects: UInt64 = 0
    /// Times a publisher was paused by the `backpressure` policy.
    public var backpressurePauses: UInt64 = 0
    /// Connections closed for breaking the protocol.
    public var protocolErrors: UInt64 = 0
    /// Single requests refused (invalid topic, unknown subscription, ...).
    public var rejectedRequests: UInt64 = 0
    /// Messages put into queues (one per queue reached).
    public var queued: UInt64 = 0
    /// Queue deliveries acknowledged.
    public var acked: UInt64 = 0
    /// Mandatory publishes that reached nothing and went back to their publisher.
    public var returned: UInt64 = 0
    /// Publishes a full `reject-publish` queue refused.
    public var rejectedPublishes: UInt64 = 0
    /// Messages republished to a dead-letter exchange.
    public var deadLettered: UInt64 = 0
    /// Messages that expired in a queue (dead-lettered or discarded).
    public var expired: UInt64 = 0
    /// Requests taken out of a queue undelivered because their caller had gone.
    public var requestsCallerGone: UInt64 = 0
    /// Dead letters discarded because they had been dead-lettered `maxDeadLetterHops` times.
    public var deadLetterCyclesCut: UInt64 = 0
    /// Operations the access rules refused (ERROR `access-refused` for a rule, not for `amq.` names).
    public var accessRefusals: UInt64 = 0
    /// Connections and requests refused by a uid's quota.
    public var quotaRefusals: UInt64 = 0

    /// The counters with the live gauges, under the names PROTOCOL.md documents for STATS_REPLY.
    public func entries(connections: Int, subscriptions: Int, exchanges: Int, queues: Int) -> [StatEntry] {
        [
            StatEntry("connections", UInt64(connections)),
            StatEntry("connections_total", connectionsTotal),
            StatEntry("subscriptions", UInt64(subscriptions)),
            StatEntry("published", published),
            StatEntry("delivered", delivered),
            StatEntry("unroutable", unroutable),
            StatEntry("dropped", dropped),
            StatEntry("slow_consumer_disconnects", slowConsumerDisconnects),
            StatEntry("backpressure_pauses", backpressurePauses),
            StatEntry("protocol_errors", protocolErrors),
            StatEntry("rejected_requests", rejectedRequests),
            StatEntry("exchanges", UInt64(exchanges)),
            StatEntry("queues", UInt64(queues)),
            StatEntry("queued", queued),
            StatEntry("acked", acked),
            StatEntry("returned", returned),
            StatEntry("rejected_publishes", rejectedPublishes),
            StatEntry("dead_lettered", deadLettered),
            StatEntry("expired", expired),
            StatEntry("requests_caller_gone", requestsCallerGone),
            StatEntry("dead_letter_cycles_cut", deadLetterCyclesCut),
            StatEntry("access_refused", accessRefusals),
            StatEntry("quota_refused", quotaRefusals),
        ]
    }
}
