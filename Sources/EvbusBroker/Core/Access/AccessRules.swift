/// Who a rule or quota is about: one uid, one gid (primary or supplementary), or anyone.
/// User and group names in the config are resolved to numbers when it is loaded.
public enum PeerMatcher: Sendable, Equatable, CustomStringConvertible {
    case uid(UInt32)
    case gid(UInt32)
    case anyone

    public func matches(_ who: PeerIdentity) -> Bool {
        switch self {
        case .uid(let uid): who.uid == uid
        case .gid(let gid): who.isMember(of: gid)
        case .anyone: true
        }
    }

    public var description: String {
        switch self {
        case .uid(let uid): "uid \(uid)"
        case .gid(let gid): "gid \(gid)"
        case .anyone: "anyone"
        }
    }
}

/// What an access rule lets its connections do, each as patterns over names (`NamePattern`).
public struct Permissions: Sendable, Equatable {
    /// Exchange and queue names it may declare, delete, purge and bind (a binding needs the queue).
    public var configure: [NamePattern] = []
    /// Topics it may PUBLISH (the default topic exchange `amq.topic`).
    public var publish: [NamePattern] = []
    /// Exchanges (by pattern) it may PUBLISH_TO, each with the routing keys it may use there.
    public var publishTo: [(exchange: NamePattern, keys: [NamePattern])] = []
    /// Topic patterns it may SUBSCRIBE to: each subscription must lie inside one of them.
    public var subscribe: [NamePattern] = []
    /// Queues it may CONSUME.
    public var consume: [NamePattern] = []
    /// Queues (routing keys of a request, PUBLISH_TO flag 0x04) it may send requests to.
    public var request: [NamePattern] = []
    /// Queues it may consume requests from; holding any lets it reply to callers' inboxes.
    public var respond: [NamePattern] = []

    public init() {}

    /// Everything both grant.
    mutating func add(_ other: Permissions) {
        configure += other.configure
        publish += other.publish
        publishTo += other.publishTo
        subscribe += other.subscribe
        consume += other.consume
        request += other.request
        respond += other.respond
    }

    public static func == (a: Permissions, b: Permissions) -> Bool {
        a.configure == b.configure && a.publish == b.publish && a.subscribe == b.subscribe && a.consume == b.consume
            && a.request == b.request && a.respond == b.respond && a.publishTo.count == b.publishTo.count
            && zip(a.publishTo, b.publishTo).allSatisfy { $0.exchange == $1.exchange && $0.keys == $1.keys }
    }
}

/// One entry of the config's `access` list.
public struct AccessRule: Sendable, Equatable {
    public var who: PeerMatcher
    public var grants: Permissions

    public init(who: PeerMatcher, grants: Permissions) {
        self.who = who
        self.grants = grants
    }
}

/// Limits on what one uid's connections may hold together (the config's `quotas`); nil = no limit.
public struct Quota: Sendable, Equatable {
    public var who: PeerMatcher
    public var connections: Int?
    public var subscriptions: Int?
    /// Queues declared by its connections that exist now.
    public var queues: Int?
    /// Bytes of ready messages in the queues its connections declared.
    public var queuedBytes: Int?

    public init(who: PeerMatcher, connections: Int? = nil, subscriptions: Int? = nil, queues: Int? = nil, queuedBytes: Int? = nil) {
        self.who = who
        self.connections = connections
        self.subscriptions = subscriptions
        self.queues = queues
        self.queuedBytes = queuedBytes
    }
}
