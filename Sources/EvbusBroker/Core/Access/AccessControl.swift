import Glibc

/// The access rules and quotas in force, and what each user holds against its quota.
///
/// Decisions are made when a connection opens (its `Grants`, shared by every connection the same
/// rules match) and at each cold request (SUBSCRIBE, CONSUME, DECLARE...). A publish is checked
/// against its grants' decision cache, so a topic already decided costs one compare.
/// Loop-bound, like the core.
public final class AccessControl {
    /// nil: no `access` section, everyone may do everything (as before access rules existed).
    public private(set) var rules: [AccessRule]?
    public private(set) var quotas: [Quota] = []
    private var grantsCache: [GrantsKey: Grants] = [:]
    private var usage: [UInt32: UserUsage] = [:]

    public init() {}

    /// Puts new rules and quotas in force. Existing connections' grants are recomputed by the core
    /// (`BrokerCore.installAccess`), which replaces each one's `Grants`.
    public func install(rules: [AccessRule]?, quotas: [Quota]) {
        self.rules = rules
        self.quotas = quotas
        grantsCache.removeAll()
        for u in usage.values { u.quota = quota(for: u.uid, gid: u.gid, groups: u.groups) }
    }

    /// The grants of a connection with this identity: the union of every rule that matches it.
    func grants(for who: PeerIdentity) -> Grants {
        let key = GrantsKey(uid: who.uid, gid: who.gid, groups: who.groups)
        if let cached = grantsCache[key] { return cached }
        let made: Grants
        if let rules {
            var union = Permissions()
            for rule in rules where rule.who.matches(who) { union.add(rule.grants) }
            made = Grants(permissions: union)
        } else {
            made = Grants(permissions: nil)
        }
        grantsCache[key] = made
        return made
    }

    /// The usage record of `who`'s uid, made on first use; it goes when nothing holds it.
    func usage(of who: PeerIdentity) -> UserUsage {
        if let u = usage[who.uid] { return u }
        let u = UserUsage(uid: who.uid, gid: who.gid, groups: who.groups)
        u.quota = quota(for: who.uid, gid: who.gid, groups: who.groups)
        usage[who.uid] = u
        return u
    }

    /// Forgets a usage record that counts nothing any more.
    func release(_ u: UserUsage) {
        if u.connections == 0 && u.subscriptions == 0 && u.queues.isEmpty { usage[u.uid] = nil }
    }

    private func quota(for uid: UInt32, gid: UInt32, groups: [UInt32]) -> Quota? {
        let who = PeerIdentity(uid: uid, gid: gid, pid: 0, groups: groups)
        return quotas.first { $0.who.matches(who) }
    }

    struct GrantsKey: Hashable {
        var uid: UInt32
        var gid: UInt32
        var groups: [UInt32]
    }
}

/// What one set of connections may do: `Permissions`, or everything (nil), plus the decisions
/// already made about the topics they published. Shared by every connection with the same
/// uid and groups, so an idle connection pays one reference for it.
final class Grants {
    let permissions: Permissions?
    /// Published topics already decided, and the one decided last (publishers mostly repeat
    /// topics). Bounded: cleared when full, decisions are cheap to remake.
    private var decided: [[UInt8]: Bool] = [:]
    /// Read for every publish, one access at a time on the loop thread (grants are loop-bound
    /// like the core), so their dynamic exclusivity checks are off.
    @exclusivity(unchecked) private var lastAllowed: [UInt8] = []
    @exclusivity(unchecked) private var hasLastAllowed = false
    static let decisionLimit = 4096

    init(permissions: Permissions?) {
        self.permissions = permissions
        allowsEverything = permissions == nil
    }

    /// No `access` section: nothing to check. A plain flag, so the hot path tests one byte and
    /// never copies `permissions` (seven arrays: seven retains).
    let allowsEverything: Bool

    /// May it PUBLISH `topic` (bytes already checked by the topic rules)? Hot path.
    @inline(__always)
    func mayPublish(topic: UnsafeRawBufferPointer) -> Bool {
        if allowsEverything { return true }
        if hasLastAllowed && lastAllowed.count == topic.count
            && lastAllowed.withUnsafeBytes({ topic.isEmpty || memcmp($0.baseAddress!, topic.baseAddress!, topic.count) == 0 })
        {
            return true
        }
        return decidePublish(topic)
    }

    @inline(never)
    private func decidePublish(_ topic: UnsafeRawBufferPointer) -> Bool {
        guard let permissions else { return true }
        let key = Array(topic)
        let allowed: Bool
        if let known = decided[key] {
            allowed = known
        } else {
            let text = String(decoding: topic, as: UTF8.self)
            allowed = permissions.publish.contains { $0.matches(text) }
            if decided.count >= Self.decisionLimit { decided.removeAll(keepingCapacity: true) }
            decided[key] = allowed
        }
        if allowed {
            lastAllowed = key
            hasLastAllowed = true
        }
        return allowed
    }

    func mayPublishTo(exchange: String, key: String) -> Bool {
        guard let permissions else { return true }
        return permissions.publishTo.contains { $0.exchange.matches(exchange) && $0.keys.contains { $0.matches(key) } }
    }

    func maySubscribe(_ pattern: String) -> Bool {
        guard let permissions else { return true }
        let p = NamePattern(pattern)
        return permissions.subscribe.contains { $0.contains(p) }
    }

    func mayConfigure(_ name: String) -> Bool {
        guard let permissions else { return true }
        return permissions.configure.contains { $0.matches(name) }
    }

    func mayConsume(_ queue: String) -> Bool {
        guard let permissions else { return true }
        return permissions.consume.contains { $0.matches(queue) } || permissions.respond.contains { $0.matches(queue) }
    }

    func mayRequest(_ key: String) -> Bool {
        guard let permissions else { return true }
        return permissions.request.contains { $0.matches(key) }
    }

    /// May it answer callers (publish into their inboxes)?
    var mayRespond: Bool { permissions.map { !$0.respond.isEmpty } ?? true }
}

/// What one uid's connections hold together, against its quota.
final class UserUsage {
    let uid: UInt32
    let gid: UInt32
    let groups: [UInt32]
    var quota: Quota?
    var connections = 0
    var subscriptions = 0
    /// The queues its connections declared that exist now.
    var queues: [MessageQueue] = []

    init(uid: UInt32, gid: UInt32, groups: [UInt32]) {
        self.uid = uid
        self.gid = gid
        self.groups = groups
    }

    /// Bytes of ready messages in its queues.
    var queuedBytes: Int { queues.reduce(0) { $0 + $1.readyMemory } }
}
