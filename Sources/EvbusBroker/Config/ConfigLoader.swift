public import Foundation
import EvbusIO

/// A config file that cannot be used: which file, which key, and why.
public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public var file: String
    public var keyPath: String
    public var reason: String

    public var description: String {
        keyPath.isEmpty ? "config \(file): \(reason)" : "config \(file): at '\(keyPath)': \(reason)"
    }
}

extension BrokerConfig {
    /// Reads and checks a JSON config file. Missing keys keep their defaults; unknown keys, wrong
    /// types and out-of-range values are refused with the key path.
    public static func load(file: String) throws(ConfigError) -> BrokerConfig {
        guard let data = FileManager.default.contents(atPath: file) else {
            throw ConfigError(file: file, keyPath: "", reason: "cannot read the file (does it exist, and is it readable?)")
        }
        return try decode(data, file: file)
    }

    public static func decode(_ data: Data, file: String = "<memory>") throws(ConfigError) -> BrokerConfig {
        let config: BrokerConfig
        do {
            config = try JSONDecoder().decode(BrokerConfig.self, from: data)
        } catch let error as DecodingError {
            throw ConfigError(file: file, keyPath: Self.path(of: error), reason: Self.reason(of: error))
        } catch let error as ConfigError {
            throw ConfigError(file: file, keyPath: error.keyPath, reason: error.reason)
        } catch {
            throw ConfigError(file: file, keyPath: "", reason: "\(error)")
        }
        do {
            try config.validate()
        } catch {
            throw ConfigError(file: file, keyPath: error.keyPath, reason: error.reason)
        }
        return config
    }

    /// Cross-field and range checks (also used for configs built in code).
    public func validate() throws(ConfigError) {
        func fail(_ key: String, _ reason: String) -> ConfigError { ConfigError(file: "", keyPath: key, reason: reason) }
        if let socketPath, socketPath.utf8.count > 107 {
            throw fail("socketPath", "is \(socketPath.utf8.count) bytes; Unix socket paths hold at most 107")
        }
        if socketMode > 0o777 { throw fail("socketMode", "must be a file mode between 0000 and 0777") }
        if maxFrameBytes < 1024 || maxFrameBytes > 64 << 20 {
            throw fail("maxFrameBytes", "must be between 1024 and 67108864, got \(maxFrameBytes)")
        }
        if lowWatermarkBytes < 0 { throw fail("lowWatermarkBytes", "must not be negative") }
        if highWatermarkBytes < 4096 { throw fail("highWatermarkBytes", "must be at least 4096, got \(highWatermarkBytes)") }
        if lowWatermarkBytes >= highWatermarkBytes {
            throw fail("lowWatermarkBytes", "must be below highWatermarkBytes (\(lowWatermarkBytes) >= \(highWatermarkBytes))")
        }
        if maxSubscriptionsPerConnection < 1 { throw fail("maxSubscriptionsPerConnection", "must be at least 1") }
        if shutdownGraceMillis < 0 || shutdownGraceMillis > 600_000 {
            throw fail("shutdownGraceMillis", "must be between 0 and 600000, got \(shutdownGraceMillis)")
        }
        if handshakeTimeoutMillis < 1 || handshakeTimeoutMillis > 3_600_000 {
            throw fail("handshakeTimeoutMillis", "must be between 1 and 3600000, got \(handshakeTimeoutMillis)")
        }
        if brokerName.isEmpty || brokerName.utf8.count > 255 { throw fail("brokerName", "must be 1 to 255 bytes") }
        if case .interval(let ms) = sync, ms < 1 || ms > 60_000 {
            throw fail("syncIntervalMillis", "must be between 1 and 60000, got \(ms)")
        }
        if segmentBytes < 4096 || segmentBytes > 1 << 30 {
            throw fail("segmentBytes", "must be between 4096 and 1073741824, got \(segmentBytes)")
        }
        if durableQueueMemoryBytes < 4096 || durableQueueMemoryBytes > 1 << 30 {
            throw fail("durableQueueMemoryBytes", "must be between 4096 and 1073741824, got \(durableQueueMemoryBytes)")
        }
        if let socketGroup, Self.groupID(socketGroup) == nil {
            throw fail("socketGroup", "no group named \"\(socketGroup)\" on this machine")
        }
        if let dataDir, dataDir.isEmpty { throw fail("dataDir", "must not be empty (null keeps everything in memory)") }
        // The declarations must all succeed; try them on a scratch topology.
        try Topology().declare(self)
    }

    /// A group given by name or number, as a gid; nil if this machine has no such group.
    public static func groupID(_ group: String) -> UInt32? {
        if let n = UInt32(group) { return n }
        return getgrnam(group).map { $0.pointee.gr_gid }
    }

    static func path(of error: DecodingError) -> String {
        let context: DecodingError.Context
        switch error {
        case .typeMismatch(_, let c), .valueNotFound(_, let c), .keyNotFound(_, let c), .dataCorrupted(let c): context = c
        @unknown default: return ""
        }
        var path = ""
        for part in context.codingPath {
            if let i = part.intValue { path += "[\(i)]" } else { path += (path.isEmpty ? "" : ".") + part.stringValue }
        }
        if case .keyNotFound(let key, _) = error { path += (path.isEmpty ? "" : ".") + key.stringValue }
        return path
    }

    static func reason(of error: DecodingError) -> String {
        switch error {
        case .typeMismatch(let type, _): "expected \(describe(type))"
        case .valueNotFound(let type, _): "expected \(describe(type)), found null"
        case .keyNotFound: "is required"
        case .dataCorrupted(let c):
            if let underlying = c.underlyingError { "not valid JSON: \((underlying as NSError).userInfo[NSDebugDescriptionErrorKey] ?? underlying)" }
            else { c.debugDescription }
        @unknown default: "\(error)"
        }
    }

    static func describe(_ type: Any.Type) -> String {
        if type == String.self { return "a string" }
        if type == Int.self || type == UInt32.self || type == UInt64.self { return "a whole number" }
        if type == Bool.self { return "true or false" }
        return "\(type)"
    }
}

extension BrokerConfig: Decodable {
    enum Key: String, CodingKey, CaseIterable {
        case socketPath, socketMode, maxFrameBytes, highWatermarkBytes, lowWatermarkBytes
        case slowConsumerPolicy, maxSubscriptionsPerConnection, handshakeTimeoutMillis, shutdownGraceMillis, logLevel, brokerName
        case exchanges, queues, bindings, dataDir, sync, syncIntervalMillis, segmentBytes, durableQueueMemoryBytes
        case access, quotas, socketGroup
    }

    /// Any key, to find the ones that are not settings.
    struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    public init(from decoder: any Decoder) throws {
        self.init()
        let all = try decoder.container(keyedBy: AnyKey.self)
        for key in all.allKeys where Key(rawValue: key.stringValue) == nil {
            let known = Key.allCases.map(\.rawValue).joined(separator: ", ")
            throw ConfigError(file: "", keyPath: key.stringValue, reason: "unknown setting (known settings: \(known))")
        }
        let c = try decoder.container(keyedBy: Key.self)
        if c.contains(.socketPath), try !c.decodeNil(forKey: .socketPath) {
            socketPath = try c.decode(String.self, forKey: .socketPath)
        }
        if let mode = try c.decodeIfPresent(String.self, forKey: .socketMode) {
            guard let parsed = UInt32(mode, radix: 8), !mode.isEmpty else {
                throw ConfigError(file: "", keyPath: "socketMode", reason: "expected an octal file mode string such as \"0600\", got \"\(mode)\"")
            }
            socketMode = parsed
        }
        maxFrameBytes = try c.decodeIfPresent(Int.self, forKey: .maxFrameBytes) ?? maxFrameBytes
        highWatermarkBytes = try c.decodeIfPresent(Int.self, forKey: .highWatermarkBytes) ?? highWatermarkBytes
        lowWatermarkBytes = try c.decodeIfPresent(Int.self, forKey: .lowWatermarkBytes) ?? lowWatermarkBytes
        slowConsumerPolicy = try Self.decodeEnum(c, .slowConsumerPolicy) ?? slowConsumerPolicy
        maxSubscriptionsPerConnection = try c.decodeIfPresent(Int.self, forKey: .maxSubscriptionsPerConnection) ?? maxSubscriptionsPerConnection
        handshakeTimeoutMillis = try c.decodeIfPresent(Int.self, forKey: .handshakeTimeoutMillis) ?? handshakeTimeoutMillis
        shutdownGraceMillis = try c.decodeIfPresent(Int.self, forKey: .shutdownGraceMillis) ?? shutdownGraceMillis
        logLevel = try Self.decodeEnum(c, .logLevel) ?? logLevel
        brokerName = try c.decodeIfPresent(String.self, forKey: .brokerName) ?? brokerName
        if c.contains(.dataDir), try !c.decodeNil(forKey: .dataDir) {
            dataDir = try c.decode(String.self, forKey: .dataDir)
        }
        let interval = try c.decodeIfPresent(Int.self, forKey: .syncIntervalMillis)
        switch try c.decodeIfPresent(String.self, forKey: .sync) {
        case nil, "always"?:
            if interval != nil {
                throw ConfigError(file: "", keyPath: "syncIntervalMillis", reason: "applies only with \"sync\": \"interval\"")
            }
        case "interval"?:
            sync = .interval(milliseconds: interval ?? 100)
        case let other?:
            throw ConfigError(file: "", keyPath: "sync", reason: "expected \"always\" or \"interval\", got \"\(other)\"")
        }
        segmentBytes = try c.decodeIfPresent(Int.self, forKey: .segmentBytes) ?? segmentBytes
        durableQueueMemoryBytes = try c.decodeIfPresent(Int.self, forKey: .durableQueueMemoryBytes) ?? durableQueueMemoryBytes
        exchanges = try c.decodeIfPresent([DeclaredExchange].self, forKey: .exchanges) ?? []
        queues = try c.decodeIfPresent([DeclaredQueue].self, forKey: .queues) ?? []
        bindings = try c.decodeIfPresent([DeclaredBinding].self, forKey: .bindings) ?? []
        if c.contains(.access), try !c.decodeNil(forKey: .access) {
            access = try c.decode([AccessRule].self, forKey: .access)
        }
        quotas = try c.decodeIfPresent([Quota].self, forKey: .quotas) ?? []
        socketGroup = try c.decodeIfPresent(String.self, forKey: .socketGroup)
    }

    /// Decodes a string enum, naming the allowed values when the string is not one of them.
    static func decodeEnum<E: RawRepresentable & CaseIterable>(_ c: KeyedDecodingContainer<Key>, _ key: Key) throws -> E?
    where E.RawValue == String {
        guard let raw = try c.decodeIfPresent(String.self, forKey: key) else { return nil }
        guard let value = E(rawValue: raw) else {
            let allowed = E.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")
            throw ConfigError(file: "", keyPath: key.rawValue, reason: "expected one of \(allowed), got \"\(raw)\"")
        }
        return value
    }
}
