public import EvbusWire

/// Exchanges, queues and bindings a config file declares, created when the broker starts.
/// A declared queue belongs to the broker: never exclusive, never auto-deleted.
public struct DeclaredExchange: Sendable, Equatable, Decodable {
    public var name: String
    public var type: ExchangeKind
    public var durable = false

    enum Key: String, CodingKey, CaseIterable { case name, type, durable }

    public init(name: String, type: ExchangeKind, durable: Bool = false) {
        self.name = name
        self.type = type
        self.durable = durable
    }

    public init(from decoder: any Decoder) throws {
        let c = try strictContainer(decoder, Key.self)
        name = try c.decode(String.self, forKey: .name)
        let raw = try c.decode(String.self, forKey: .type)
        guard let kind = ExchangeKind(name: raw) else {
            throw ConfigError(file: "", keyPath: keyPath(decoder, "type"), reason: "expected \"fanout\", \"direct\" or \"topic\", got \"\(raw)\"")
        }
        type = kind
        durable = try c.decodeIfPresent(Bool.self, forKey: .durable) ?? false
    }
}

public struct DeclaredQueue: Sendable, Equatable, Decodable {
    public var name: String
    public var options = QueueOptions()

    enum Key: String, CodingKey, CaseIterable {
        case name, durable, maxLength, maxBytes, overflow, messageTTLMillis, deadLetterExchange, deadLetterRoutingKey
    }

    public init(name: String, options: QueueOptions = QueueOptions()) {
        self.name = name
        self.options = options
    }

    public init(from decoder: any Decoder) throws {
        let c = try strictContainer(decoder, Key.self)
        name = try c.decode(String.self, forKey: .name)
        options.maxLength = try Self.whole(c, .maxLength, decoder, max: Int.max).map(UInt64.init)
        options.maxBytes = try Self.whole(c, .maxBytes, decoder, max: Int.max).map(UInt64.init)
        if let raw = try c.decodeIfPresent(String.self, forKey: .overflow) {
            guard let policy = OverflowPolicy(name: raw) else {
                throw ConfigError(file: "", keyPath: keyPath(decoder, "overflow"), reason: "expected \"drop-head\" or \"reject-publish\", got \"\(raw)\"")
            }
            options.overflow = policy
        }
        options.messageTTL = try Self.whole(c, .messageTTLMillis, decoder, max: Int(UInt32.max - 1)).map(UInt32.init)
        options.deadLetterExchange = try c.decodeIfPresent(String.self, forKey: .deadLetterExchange)
        options.deadLetterRoutingKey = try c.decodeIfPresent(String.self, forKey: .deadLetterRoutingKey)
        options.durable = try c.decodeIfPresent(Bool.self, forKey: .durable) ?? false
    }

    /// A whole number between 0 and `max`, or nil when absent.
    private static func whole(_ c: KeyedDecodingContainer<Key>, _ key: Key, _ decoder: any Decoder, max: Int) throws -> Int? {
        guard let n = try c.decodeIfPresent(Int.self, forKey: key) else { return nil }
        guard (0...max).contains(n) else {
            throw ConfigError(file: "", keyPath: keyPath(decoder, key.rawValue), reason: "expected a whole number from 0 to \(max), got \(n)")
        }
        return n
    }
}

public struct DeclaredBinding: Sendable, Equatable, Decodable {
    public var queue: String
    public var exchange: String
    public var key: String

    enum Key: String, CodingKey, CaseIterable { case queue, exchange, key }

    public init(queue: String, exchange: String, key: String) {
        self.queue = queue
        self.exchange = exchange
        self.key = key
    }

    public init(from decoder: any Decoder) throws {
        let c = try strictContainer(decoder, Key.self)
        queue = try c.decode(String.self, forKey: .queue)
        exchange = try c.decode(String.self, forKey: .exchange)
        key = try c.decodeIfPresent(String.self, forKey: .key) ?? ""
    }
}

/// A keyed container that refuses keys it does not know, naming the ones it does.
func strictContainer<K: CodingKey & CaseIterable & RawRepresentable>(
    _ decoder: any Decoder, _: K.Type
) throws -> KeyedDecodingContainer<K> where K.RawValue == String {
    let all = try decoder.container(keyedBy: BrokerConfig.AnyKey.self)
    for key in all.allKeys where K(rawValue: key.stringValue) == nil {
        let known = K.allCases.map(\.rawValue).joined(separator: ", ")
        throw ConfigError(file: "", keyPath: keyPath(decoder, key.stringValue), reason: "unknown key (known keys: \(known))")
    }
    return try decoder.container(keyedBy: K.self)
}

func keyPath(_ decoder: any Decoder, _ key: String) -> String {
    var path = ""
    for part in decoder.codingPath {
        if let i = part.intValue { path += "[\(i)]" } else { path += (path.isEmpty ? "" : ".") + part.stringValue }
    }
    return path + (path.isEmpty ? "" : ".") + key
}

extension Topology {
    /// Declares what a config lists, in order: exchanges, queues, bindings. Throws the first
    /// refusal with its key path (so a bad file fails at start, not at first use).
    public func declare(_ config: BrokerConfig) throws(ConfigError) {
        func fail(_ path: String, _ error: WireError) -> ConfigError {
            ConfigError(file: "", keyPath: path, reason: error.message)
        }
        for (i, e) in config.exchanges.enumerated() {
            do { try declareExchange(e.name, kind: e.type, durable: e.durable) } catch { throw fail("exchanges[\(i)]", error) }
        }
        for (i, q) in config.queues.enumerated() {
            guard !q.name.isEmpty else {
                throw ConfigError(file: "", keyPath: "queues[\(i)].name", reason: "a declared queue needs a name")
            }
            do { _ = try declareQueue(q.name, options: q.options, connection: 0) } catch { throw fail("queues[\(i)]", error) }
        }
        for (i, b) in config.bindings.enumerated() {
            do { try bind(queue: b.queue, exchange: b.exchange, key: b.key, connection: 0) } catch { throw fail("bindings[\(i)]", error) }
        }
    }
}
