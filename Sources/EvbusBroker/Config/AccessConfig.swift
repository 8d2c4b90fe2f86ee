import EvbusWire
import Glibc

/// The config's `access` rules and `quotas` (docs/SECURITY.md), decoded strictly: an unknown key,
/// a pattern that breaks the topic rules, or a user or group this machine does not know is
/// refused with its key path, so a typo never silently grants or refuses.

/// Whom an entry is about: exactly one of `uid`, `user`, `gid`, `group` or `"anyone": true`.
enum MatcherKey: String, CodingKey, CaseIterable {
    case uid, user, gid, group, anyone
}

func decodeMatcher(_ decoder: any Decoder) throws -> PeerMatcher {
    let c = try decoder.container(keyedBy: BrokerConfig.AnyKey.self)
    let present = MatcherKey.allCases.filter { c.contains(BrokerConfig.AnyKey(stringValue: $0.rawValue)) }
    guard present.count == 1, let which = present.first else {
        throw ConfigError(
            file: "", keyPath: keyPath(decoder, "").dropLastDot(),
            reason: present.isEmpty
                ? "says whom it is about with one of uid, user, gid, group or \"anyone\": true"
                : "names more than one of \(present.map(\.rawValue).joined(separator: ", ")); use one entry each")
    }
    let key = BrokerConfig.AnyKey(stringValue: which.rawValue)
    func number() throws -> UInt32 {
        let n = try c.decode(Int.self, forKey: key)
        guard n >= 0 && n < Int(UInt32.max) else {
            throw ConfigError(file: "", keyPath: keyPath(decoder, which.rawValue), reason: "must be between 0 and 4294967294, got \(n)")
        }
        return UInt32(n)
    }
    switch which {
    case .uid: return .uid(try number())
    case .gid: return .gid(try number())
    case .user:
        let name = try c.decode(String.self, forKey: key)
        guard let entry = getpwnam(name) else {
            throw ConfigError(file: "", keyPath: keyPath(decoder, "user"), reason: "no user named \"\(name)\" on this machine (use \"uid\" for a number)")
        }
        return .uid(entry.pointee.pw_uid)
    case .group:
        let name = try c.decode(String.self, forKey: key)
        guard let entry = getgrnam(name) else {
            throw ConfigError(file: "", keyPath: keyPath(decoder, "group"), reason: "no group named \"\(name)\" on this machine (use \"gid\" for a number)")
        }
        return .gid(entry.pointee.gr_gid)
    case .anyone:
        guard try c.decode(Bool.self, forKey: key) else {
            throw ConfigError(file: "", keyPath: keyPath(decoder, "anyone"), reason: "must be true (leave the entry out to match nobody)")
        }
        return .anyone
    }
}

extension String {
    func dropLastDot() -> String { hasSuffix(".") ? String(dropLast()) : self }
}

extension AccessRule: Decodable {
    enum Key: String, CodingKey, CaseIterable {
        case uid, user, gid, group, anyone
        case configure, publish, publishTo, subscribe, consume, request, respond
    }

    public init(from decoder: any Decoder) throws {
        let c = try strictContainer(decoder, Key.self)
        let who = try decodeMatcher(decoder)
        func patterns(_ key: Key) throws -> [NamePattern] {
            let texts = try c.decodeIfPresent([String].self, forKey: key) ?? []
            return try texts.enumerated().map { i, text in
                try checkedPattern(text, keyPath(decoder, "\(key.rawValue)[\(i)]"))
            }
        }
        var grants = Permissions()
        grants.configure = try patterns(.configure)
        grants.publish = try patterns(.publish)
        grants.subscribe = try patterns(.subscribe)
        grants.consume = try patterns(.consume)
        grants.request = try patterns(.request)
        grants.respond = try patterns(.respond)
        let exchanges = try c.decodeIfPresent([String: [String]].self, forKey: .publishTo) ?? [:]
        for exchange in exchanges.keys.sorted() {
            let path = keyPath(decoder, "publishTo.\(exchange)")
            let keys = try exchanges[exchange]!.enumerated().map { i, text in try checkedPattern(text, "\(path)[\(i)]") }
            grants.publishTo.append((exchange: try checkedPattern(exchange, path, isExchange: true), keys: keys))
        }
        self.init(who: who, grants: grants)
    }
}

/// A pattern as the topic rules have them (PROTOCOL.md §7). The empty string is allowed as an
/// exchange pattern: it names the default exchange.
private func checkedPattern(_ text: String, _ path: String, isExchange: Bool = false) throws -> NamePattern {
    if !(isExchange && text.isEmpty) {
        do {
            try TopicRules.validatePattern(text)
        } catch {
            throw ConfigError(file: "", keyPath: path, reason: "\"\(text)\" is not a valid pattern: \(error.message)")
        }
    }
    return NamePattern(text)
}

extension Quota: Decodable {
    enum Key: String, CodingKey, CaseIterable {
        case uid, user, gid, group, anyone
        case connections, subscriptions, queues, queuedBytes
    }

    public init(from decoder: any Decoder) throws {
        let c = try strictContainer(decoder, Key.self)
        func limit(_ key: Key) throws -> Int? {
            guard let n = try c.decodeIfPresent(Int.self, forKey: key) else { return nil }
            guard n >= 0 else { throw ConfigError(file: "", keyPath: keyPath(decoder, key.rawValue), reason: "must not be negative, got \(n)") }
            return n
        }
        self.init(
            who: try decodeMatcher(decoder), connections: try limit(.connections), subscriptions: try limit(.subscriptions),
            queues: try limit(.queues), queuedBytes: try limit(.queuedBytes))
        guard connections != nil || subscriptions != nil || queues != nil || queuedBytes != nil else {
            throw ConfigError(file: "", keyPath: keyPath(decoder, "").dropLastDot(), reason: "sets no limit (connections, subscriptions, queues, queuedBytes)")
        }
    }
}
