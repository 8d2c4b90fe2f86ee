public import EvbusNATS
public import Foundation

/// A refused bridge config: the key path (`export[1]`, `nats.servers`) and why.
public struct BridgeConfigError: Error, Equatable, CustomStringConvertible {
    public var keyPath: String
    public var reason: String
    public init(_ keyPath: String, _ reason: String) {
        self.keyPath = keyPath
        self.reason = reason
    }
    public var description: String { "\(keyPath): \(reason)" }
}

/// `evbus bridge --config FILE` (docs/BRIDGE.md; `Configs/bridge.json` is an example).
public struct BridgeConfig: Sendable, Equatable {
    /// This bridge's name: the origin header of what it exports, and its peer name.
    public var name: String
    /// The local broker's socket (nil: the usual default).
    public var socket: String?
    /// The NATS client as configured: its servers (`nats.servers`), connect deadline,
    /// keepalive and credentials; named `evbus-bridge-<name>`.
    public var nats: NATSClient.Options
    public var mapping: TopicMapping
    /// Local topic patterns published to NATS, and their subject patterns.
    public var exports: [(topic: String, subject: String)]
    /// NATS subject patterns (under the prefix) published locally.
    public var imports: [(topic: String, subject: String)]
    public enum Outage: String, Sendable { case buffer, drop }
    /// What topic export does while NATS is unreachable: keep up to `bufferMessages`, or drop.
    public var outage: Outage
    public var bufferMessages: Int
    /// Request/reply across machines: local queues whose responders answer NATS requests on a
    /// subject, and NATS subjects whose responders answer local requests to a queue.
    public var exportServices: [(queue: String, subject: String)] = []
    public var importServices: [(subject: String, queue: String)] = []
    /// How long an exported service's local call may take, and an imported one's NATS request.
    public var serviceTimeout: Duration = .seconds(30)
    /// Durable local queues exported to JetStream streams: each message is acked locally only
    /// once JetStream has acknowledged storing it.
    public var durableExports: [(queue: String, stream: String, subject: String)] = []

    public static func == (a: BridgeConfig, b: BridgeConfig) -> Bool {
        a.name == b.name && a.socket == b.socket && a.nats.servers == b.nats.servers && a.mapping == b.mapping
            && a.exports.map(\.subject) == b.exports.map(\.subject) && a.imports.map(\.subject) == b.imports.map(\.subject)
            && a.outage == b.outage && a.bufferMessages == b.bufferMessages
    }

    public static func load(file: String) throws -> BridgeConfig {
        guard let data = FileManager.default.contents(atPath: file) else {
            throw BridgeConfigError("(file)", "cannot read \(file)")
        }
        return try parse(data)
    }

    public static func parse(_ data: Data) throws(BridgeConfigError) -> BridgeConfig {
        guard let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw BridgeConfigError("(file)", "not a JSON object")
        }
        try known(root, ["name", "socket", "nats", "prefix", "export", "import", "outage", "services", "jetstream"], at: "")
        guard let name = root["name"] as? String, !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
            throw BridgeConfigError("name", "required: letters, digits, '-', '_' and '.'")
        }
        let socket = try optionalString(root, "socket")
        guard let nats = root["nats"] as? [String: Any] else { throw BridgeConfigError("nats", "required: an object with \"servers\"") }
        try known(nats, ["servers", "connectTimeoutMillis", "pingIntervalMillis", "maxPingsOutstanding", "user", "password", "token"], at: "nats.")
        guard let servers = nats["servers"] as? [String], !servers.isEmpty else {
            throw BridgeConfigError("nats.servers", "required: a non-empty list of \"nats://host:port\"")
        }
        for (i, s) in servers.enumerated() where !s.hasPrefix("nats://") || s.split(separator: ":").count != 3 {
            throw BridgeConfigError("nats.servers[\(i)]", "'\(s)' is not nats://host:port")
        }
        let connectTimeout = try optionalInt(nats, "connectTimeoutMillis", at: "nats.", in: 1...3_600_000).map(Duration.milliseconds)
        let pingInterval = try optionalInt(nats, "pingIntervalMillis", at: "nats.", in: 1...3_600_000).map(Duration.milliseconds)
        let maxPings = try optionalInt(nats, "maxPingsOutstanding", at: "nats.", in: 1...1000)
        let user = try optionalString(nats, "user", at: "nats.")
        let password = try optionalString(nats, "password", at: "nats.")
        let token = try optionalString(nats, "token", at: "nats.")
        if password != nil && user == nil { throw BridgeConfigError("nats.password", "given without nats.user") }
        if token != nil && user != nil { throw BridgeConfigError("nats.token", "a token or a user and password, not both") }
        let mapping = try TopicMapping(prefix: try optionalString(root, "prefix") ?? "evbus")
        func patterns(_ key: String) throws(BridgeConfigError) -> [(String, String)] {
            guard let value = root[key] else { return [] }
            guard let list = value as? [String] else { throw BridgeConfigError(key, "a list of topic patterns") }
            var out: [(String, String)] = []
            for (i, p) in list.enumerated() { out.append((p, try mapping.subjectPattern(p, key: "\(key)[\(i)]"))) }
            return out
        }
        let exports = try patterns("export")
        let imports = try patterns("import")
        var exportServices: [(String, String)] = []
        var importServices: [(String, String)] = []
        var serviceTimeout = Duration.seconds(30)
        if let services = root["services"] {
            guard let services = services as? [String: Any] else { throw BridgeConfigError("services", "an object") }
            try known(services, ["export", "import", "timeoutMillis"], at: "services.")
            func pairs(_ key: String, _ from: String, _ to: String) throws(BridgeConfigError) -> [(String, String)] {
                guard let value = services[key] else { return [] }
                guard let list = value as? [[String: Any]] else { throw BridgeConfigError("services.\(key)", "a list of {\"\(from)\": ..., \"\(to)\": ...}") }
                var out: [(String, String)] = []
                for (i, item) in list.enumerated() {
                    let at = "services.\(key)[\(i)]"
                    try known(item, [from, to], at: at + ".")
                    guard let a = item[from] as? String, !a.isEmpty else { throw BridgeConfigError(at + ".\(from)", "required") }
                    guard let b = item[to] as? String, !b.isEmpty, !b.contains("*"), !b.contains(">"), !b.contains("#") else {
                        throw BridgeConfigError(at + ".\(to)", "required, without wildcards")
                    }
                    out.append((a, b))
                }
                return out
            }
            exportServices = try pairs("export", "queue", "subject")
            importServices = try pairs("import", "subject", "queue")
            if let t = services["timeoutMillis"] {
                guard let t = t as? Int, t >= 1, t <= 3_600_000 else { throw BridgeConfigError("services.timeoutMillis", "between 1 and 3600000") }
                serviceTimeout = .milliseconds(t)
            }
        }
        var durable: [(String, String, String)] = []
        if let js = root["jetstream"] {
            guard let list = js as? [[String: Any]] else { throw BridgeConfigError("jetstream", "a list of {\"queue\", \"stream\", \"subject\"}") }
            for (i, item) in list.enumerated() {
                let at = "jetstream[\(i)]"
                try known(item, ["queue", "stream", "subject"], at: at + ".")
                guard let q = item["queue"] as? String, !q.isEmpty else { throw BridgeConfigError(at + ".queue", "required") }
                guard let st = item["stream"] as? String, !st.isEmpty, st.allSatisfy({ $0.isLetter || $0.isNumber || "-_".contains($0) }) else {
                    throw BridgeConfigError(at + ".stream", "required: letters, digits, '-' and '_' (a JetStream stream name)")
                }
                guard let sub = item["subject"] as? String, !sub.isEmpty, !sub.contains("*"), !sub.contains(">") else {
                    throw BridgeConfigError(at + ".subject", "required, without wildcards")
                }
                durable.append((q, st, sub))
            }
        }
        guard !exports.isEmpty || !imports.isEmpty || !exportServices.isEmpty || !importServices.isEmpty || !durable.isEmpty else {
            throw BridgeConfigError("export", "nothing to export or import")
        }
        var outage = Outage.drop
        var buffer = 10_000
        if let o = root["outage"] {
            guard let o = o as? [String: Any] else { throw BridgeConfigError("outage", "an object") }
            try known(o, ["mode", "bufferMessages"], at: "outage.")
            if let m = o["mode"] {
                guard let m = m as? String, let mode = Outage(rawValue: m) else { throw BridgeConfigError("outage.mode", "\"buffer\" or \"drop\"") }
                outage = mode
            }
            if let b = o["bufferMessages"] {
                guard let b = b as? Int, b >= 1, b <= 10_000_000 else { throw BridgeConfigError("outage.bufferMessages", "between 1 and 10000000") }
                buffer = b
            }
        }
        var client = NATSClient.Options(servers: servers, name: "evbus-bridge-\(name)")
        if let connectTimeout { client.connectTimeout = connectTimeout }
        if let pingInterval { client.pingInterval = pingInterval }
        if let maxPings { client.maxPingsOutstanding = maxPings }
        (client.user, client.password, client.token) = (user, password, token)
        var config = BridgeConfig(
            name: name, socket: socket, nats: client, mapping: mapping, exports: exports, imports: imports, outage: outage,
            bufferMessages: buffer)
        config.exportServices = exportServices
        config.importServices = importServices
        config.serviceTimeout = serviceTimeout
        config.durableExports = durable
        return config
    }

    private static func known(_ object: [String: Any], _ keys: Set<String>, at path: String) throws(BridgeConfigError) {
        if let unknown = object.keys.sorted().first(where: { !keys.contains($0) }) {
            throw BridgeConfigError(path + unknown, "unknown key (known: \(keys.sorted().joined(separator: ", ")))")
        }
    }

    private static func optionalInt(_ object: [String: Any], _ key: String, at path: String, in range: ClosedRange<Int>) throws(BridgeConfigError) -> Int? {
        guard let value = object[key] else { return nil }
        guard let n = value as? Int, range.contains(n) else {
            throw BridgeConfigError(path + key, "a whole number between \(range.lowerBound) and \(range.upperBound)")
        }
        return n
    }

    private static func optionalString(_ object: [String: Any], _ key: String, at path: String = "") throws(BridgeConfigError) -> String? {
        guard let value = object[key] else { return nil }
        guard let s = value as? String, !s.isEmpty else { throw BridgeConfigError(path + key, "a non-empty string") }
        return s
    }
}
