/// A compact binary form for `Codable` values: what a process pool's work and results, and typed
/// remote dispatches, cross process boundaries in. No Foundation, no type names, no text numbers.
///
/// Every value is a *slot*: a varint `0` for nil, or varint `n + 1` followed by `n` bytes. Inside:
/// integers are varints (signed ones zigzag-encoded), `Bool` one byte, floating point its IEEE
/// bits little-endian, a `String` its UTF-8 bytes (the slot gives the length); a keyed container
/// is a varint count of fields, each a slot holding the key's UTF-8 followed by the value's slot;
/// an unkeyed container a varint count followed by each element's slot. `Int` 5 takes two bytes,
/// a struct `{x: 1, y: 2}` ten.
public struct CompactEncoder: Sendable {
    public init() {}

    /// Encodes `value` (nil-able values included) into its slot.
    public func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        let node = EncodedNode()
        try value.encode(to: NodeEncoder(node: node, codingPath: []))
        var out: [UInt8] = []
        node.serialize(into: &out)
        return out
    }
}

/// A value being encoded: raw bytes, a keyed or an unkeyed container, or nil.
final class EncodedNode {
    enum Content {
        case empty
        case null
        case bytes([UInt8])
        case keyed([(key: String, value: EncodedNode)])
        case unkeyed([EncodedNode])
    }

    var content = Content.empty

    func serialize(into out: inout [UInt8]) {
        var body: [UInt8] = []
        switch content {
        case .null:
            Varint.write(0, into: &out)
            return
        case .empty: break
        case .bytes(let b): body = b
        case .keyed(let fields):
            Varint.write(UInt64(fields.count), into: &body)
            for field in fields {
                var pair: [UInt8] = Array(field.key.utf8)
                pair = slot(pair)
                body += pair
                field.value.serialize(into: &body)
            }
        case .unkeyed(let items):
            Varint.write(UInt64(items.count), into: &body)
            for item in items { item.serialize(into: &body) }
        }
        out += slot(body)
    }

    private func slot(_ body: [UInt8]) -> [UInt8] {
        var s: [UInt8] = []
        Varint.write(UInt64(body.count) + 1, into: &s)
        return s + body
    }
}

enum Varint {
    static func write(_ value: UInt64, into out: inout [UInt8]) {
        var v = value
        while v >= 0x80 {
            out.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
    }

    static func zigzag(_ v: Int64) -> UInt64 { UInt64(bitPattern: (v << 1) ^ (v >> 63)) }
    static func unzigzag(_ v: UInt64) -> Int64 { Int64(bitPattern: v >> 1) ^ -Int64(bitPattern: v & 1) }
}

struct NodeEncoder: Encoder {
    let node: EncodedNode
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        if case .keyed = node.content {} else { node.content = .keyed([]) }
        return KeyedEncodingContainer(KeyedNodeContainer<Key>(node: node, codingPath: codingPath))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        if case .unkeyed = node.content {} else { node.content = .unkeyed([]) }
        return UnkeyedNodeContainer(node: node, codingPath: codingPath)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer { SingleNodeContainer(node: node, codingPath: codingPath) }
}

/// Writes primitives into a node's bytes.
struct SingleNodeContainer: SingleValueEncodingContainer {
    let node: EncodedNode
    let codingPath: [any CodingKey]

    mutating func encodeNil() throws { node.content = .null }
    mutating func encode(_ value: Bool) throws { node.content = .bytes([value ? 1 : 0]) }
    mutating func encode(_ value: String) throws { node.content = .bytes(Array(value.utf8)) }
    mutating func encode(_ value: Double) throws { fixed(value.bitPattern) }
    mutating func encode(_ value: Float) throws { fixed(value.bitPattern) }
    mutating func encode(_ value: Int) throws { signed(Int64(value)) }
    mutating func encode(_ value: Int8) throws { signed(Int64(value)) }
    mutating func encode(_ value: Int16) throws { signed(Int64(value)) }
    mutating func encode(_ value: Int32) throws { signed(Int64(value)) }
    mutating func encode(_ value: Int64) throws { signed(value) }
    mutating func encode(_ value: UInt) throws { unsigned(UInt64(value)) }
    mutating func encode(_ value: UInt8) throws { unsigned(UInt64(value)) }
    mutating func encode(_ value: UInt16) throws { unsigned(UInt64(value)) }
    mutating func encode(_ value: UInt32) throws { unsigned(UInt64(value)) }
    mutating func encode(_ value: UInt64) throws { unsigned(value) }
    mutating func encode<T: Encodable>(_ value: T) throws {
        try value.encode(to: NodeEncoder(node: node, codingPath: codingPath))
    }

    private func signed(_ v: Int64) { unsigned(Varint.zigzag(v)) }
    private func unsigned(_ v: UInt64) {
        var b: [UInt8] = []
        Varint.write(v, into: &b)
        node.content = .bytes(b)
    }
    private func fixed<F: FixedWidthInteger>(_ bits: F) {
        node.content = .bytes(withUnsafeBytes(of: bits.littleEndian) { Array($0) })
    }
}

struct KeyedNodeContainer<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let node: EncodedNode
    let codingPath: [any CodingKey]

    private func child(_ key: Key) -> EncodedNode {
        let child = EncodedNode()
        if case .keyed(var fields) = node.content {
            fields.append((key.stringValue, child))
            node.content = .keyed(fields)
        }
        return child
    }

    mutating func encodeNil(forKey key: Key) throws { child(key).content = .null }
    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
        try value.encode(to: NodeEncoder(node: child(key), codingPath: codingPath + [key]))
    }
    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
        NodeEncoder(node: child(key), codingPath: codingPath + [key]).container(keyedBy: type)
    }
    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        NodeEncoder(node: child(key), codingPath: codingPath + [key]).unkeyedContainer()
    }
    mutating func superEncoder() -> any Encoder { NodeEncoder(node: child(Key(stringValue: "super")!), codingPath: codingPath) }
    mutating func superEncoder(forKey key: Key) -> any Encoder { NodeEncoder(node: child(key), codingPath: codingPath + [key]) }
}

struct UnkeyedNodeContainer: UnkeyedEncodingContainer {
    let node: EncodedNode
    let codingPath: [any CodingKey]
    var count: Int { if case .unkeyed(let items) = node.content { items.count } else { 0 } }

    private func next() -> EncodedNode {
        let child = EncodedNode()
        if case .unkeyed(var items) = node.content {
            items.append(child)
            node.content = .unkeyed(items)
        }
        return child
    }

    mutating func encodeNil() throws { next().content = .null }
    mutating func encode<T: Encodable>(_ value: T) throws {
        try value.encode(to: NodeEncoder(node: next(), codingPath: codingPath))
    }
    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
        NodeEncoder(node: next(), codingPath: codingPath).container(keyedBy: type)
    }
    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
        NodeEncoder(node: next(), codingPath: codingPath).unkeyedContainer()
    }
    mutating func superEncoder() -> any Encoder { NodeEncoder(node: next(), codingPath: codingPath) }
}
