/// Reads what `CompactEncoder` wrote (see there for the format). Malformed input throws a
/// `DecodingError` naming the coding path; it never traps.
public struct CompactDecoder: Sendable {
    public init() {}

    public func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        var reader = SlotReader(bytes[...], codingPath: [])
        let slot = try reader.slot()
        guard reader.isAtEnd else { throw reader.corrupt("\(reader.remaining) bytes after the value") }
        return try T(from: SlotDecoder(slot: slot, codingPath: []))
    }
}

/// Reads varints and slots from a range of bytes.
struct SlotReader {
    private var bytes: ArraySlice<UInt8>
    let codingPath: [any CodingKey]

    init(_ bytes: ArraySlice<UInt8>, codingPath: [any CodingKey]) {
        self.bytes = bytes
        self.codingPath = codingPath
    }

    var isAtEnd: Bool { bytes.isEmpty }
    var remaining: Int { bytes.count }

    func corrupt(_ why: String) -> DecodingError {
        .dataCorrupted(DecodingError.Context(codingPath: codingPath, debugDescription: "compact data: \(why)"))
    }

    mutating func varint() throws -> UInt64 {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while let byte = bytes.popFirst() {
            guard shift < 64 else { break }
            value |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
        }
        throw corrupt("a number runs past the end")
    }

    /// The next slot: nil for a nil value, else its bytes.
    mutating func slot() throws -> ArraySlice<UInt8>? {
        let marker = try varint()
        guard marker > 0 else { return nil }
        let n = marker - 1
        guard n <= UInt64(bytes.count) else { throw corrupt("a value of \(n) bytes with \(bytes.count) left") }
        let start = bytes.startIndex
        let body = bytes[start..<(start + Int(n))]
        bytes = bytes[(start + Int(n))...]
        return body
    }
}

struct SlotDecoder: Decoder {
    /// nil: the value is nil.
    let slot: ArraySlice<UInt8>?
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func present() throws -> ArraySlice<UInt8> {
        guard let slot else {
            throw DecodingError.valueNotFound(Any.self, DecodingError.Context(codingPath: codingPath, debugDescription: "compact data: nil where a value was expected"))
        }
        return slot
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        var reader = SlotReader(try present(), codingPath: codingPath)
        var fields: [String: ArraySlice<UInt8>?] = [:]
        var keys: [String] = []
        if !reader.isAtEnd {
            let count = try reader.varint()
            for _ in 0..<count {
                guard let key = try reader.slot() else { throw reader.corrupt("a nil field name") }
                let name = String(decoding: key, as: UTF8.self)
                fields[name] = .some(try reader.slot())
                keys.append(name)
            }
        }
        return KeyedDecodingContainer(KeyedSlotContainer<Key>(fields: fields, keys: keys, codingPath: codingPath))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        var reader = SlotReader(try present(), codingPath: codingPath)
        var items: [ArraySlice<UInt8>?] = []
        if !reader.isAtEnd {
            let count = try reader.varint()
            for _ in 0..<count { items.append(try reader.slot()) }
        }
        return UnkeyedSlotContainer(items: items, codingPath: codingPath)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer { SingleSlotContainer(slot: slot, codingPath: codingPath) }
}

struct SingleSlotContainer: SingleValueDecodingContainer {
    let slot: ArraySlice<UInt8>?
    let codingPath: [any CodingKey]

    private var decoder: SlotDecoder { SlotDecoder(slot: slot, codingPath: codingPath) }

    func decodeNil() -> Bool { slot == nil }

    private func unsigned<T: FixedWidthInteger>(_ type: T.Type) throws -> T {
        var reader = SlotReader(try decoder.present(), codingPath: codingPath)
        let v = try reader.varint()
        guard reader.isAtEnd, let value = T(exactly: v) else { throw reader.corrupt("\(v) is not a \(T.self)") }
        return value
    }

    private func signed<T: FixedWidthInteger>(_ type: T.Type) throws -> T {
        var reader = SlotReader(try decoder.present(), codingPath: codingPath)
        let v = Varint.unzigzag(try reader.varint())
        guard reader.isAtEnd, let value = T(exactly: v) else { throw reader.corrupt("\(v) is not a \(T.self)") }
        return value
    }

    private func fixed<T: FixedWidthInteger>(_ type: T.Type) throws -> T {
        let bytes = try decoder.present()
        guard bytes.count == MemoryLayout<T>.size else {
            throw SlotReader(bytes, codingPath: codingPath).corrupt("\(bytes.count) bytes for a \(MemoryLayout<T>.size)-byte number")
        }
        var value = T.zero
        withUnsafeMutableBytes(of: &value) { $0.copyBytes(from: bytes) }
        return T(littleEndian: value)
    }

    func decode(_ type: Bool.Type) throws -> Bool {
        let bytes = try decoder.present()
        guard bytes.count == 1, bytes.first! <= 1 else { throw SlotReader(bytes, codingPath: codingPath).corrupt("not a Bool") }
        return bytes.first! == 1
    }
    func decode(_ type: String.Type) throws -> String { String(decoding: try decoder.present(), as: UTF8.self) }
    func decode(_ type: Double.Type) throws -> Double { Double(bitPattern: try fixed(UInt64.self)) }
    func decode(_ type: Float.Type) throws -> Float { Float(bitPattern: try fixed(UInt32.self)) }
    func decode(_ type: Int.Type) throws -> Int { try signed(Int.self) }
    func decode(_ type: Int8.Type) throws -> Int8 { try signed(Int8.self) }
    func decode(_ type: Int16.Type) throws -> Int16 { try signed(Int16.self) }
    func decode(_ type: Int32.Type) throws -> Int32 { try signed(Int32.self) }
    func decode(_ type: Int64.Type) throws -> Int64 { try signed(Int64.self) }
    func decode(_ type: UInt.Type) throws -> UInt { try unsigned(UInt.self) }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try unsigned(UInt8.self) }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try unsigned(UInt16.self) }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try unsigned(UInt32.self) }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try unsigned(UInt64.self) }
    func decode<T: Decodable>(_ type: T.Type) throws -> T { try T(from: decoder) }
}

struct KeyedSlotContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let fields: [String: ArraySlice<UInt8>?]
    let keys: [String]
    let codingPath: [any CodingKey]

    var allKeys: [Key] { keys.compactMap { Key(stringValue: $0) } }
    func contains(_ key: Key) -> Bool { fields[key.stringValue] != nil }

    private func decoder(_ key: Key) throws -> SlotDecoder {
        guard let slot = fields[key.stringValue] else {
            throw DecodingError.keyNotFound(key, DecodingError.Context(codingPath: codingPath, debugDescription: "compact data: no field '\(key.stringValue)'"))
        }
        return SlotDecoder(slot: slot, codingPath: codingPath + [key])
    }

    func decodeNil(forKey key: Key) throws -> Bool { try decoder(key).slot == nil }
    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T { try T(from: decoder(key)) }
    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        try decoder(key).container(keyedBy: type)
    }
    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer { try decoder(key).unkeyedContainer() }
    func superDecoder() throws -> any Decoder { try decoder(Key(stringValue: "super")!) }
    func superDecoder(forKey key: Key) throws -> any Decoder { try decoder(key) }
}

struct UnkeyedSlotContainer: UnkeyedDecodingContainer {
    let items: [ArraySlice<UInt8>?]
    let codingPath: [any CodingKey]
    var currentIndex = 0
    var count: Int? { items.count }
    var isAtEnd: Bool { currentIndex >= items.count }

    private mutating func next() throws -> SlotDecoder {
        guard !isAtEnd else {
            throw DecodingError.valueNotFound(Any.self, DecodingError.Context(codingPath: codingPath, debugDescription: "compact data: the list has only \(items.count) items"))
        }
        defer { currentIndex += 1 }
        return SlotDecoder(slot: items[currentIndex], codingPath: codingPath)
    }

    mutating func decodeNil() throws -> Bool {
        guard !isAtEnd, items[currentIndex] == nil else { return false }
        currentIndex += 1
        return true
    }
    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T { try T(from: next()) }
    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        try next().container(keyedBy: type)
    }
    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer { try next().unkeyedContainer() }
    mutating func superDecoder() throws -> any Decoder { try next() }
}
