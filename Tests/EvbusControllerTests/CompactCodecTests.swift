import EvbusController
import Testing

@Suite struct CompactCodecTests {
    struct Point: Codable, Equatable { var x: Int; var y: Int }
    enum Shape: Codable, Equatable { case circle(radius: Double), polygon([Point]), empty }
    struct Everything: Codable, Equatable {
        var flag: Bool
        var small: Int8
        var big: UInt64
        var negative: Int64
        var ratio: Float
        var text: String
        var emptyText: String?
        var missing: String?
        var list: [Int]
        var nested: [[String]]
        var table: [String: Point]
        var numbered: [Int: String]
        var shapes: [Shape]
        var optionals: [Int?]
    }

    func roundTrip<T: Codable & Equatable>(_ value: T) throws -> [UInt8] {
        let bytes = try CompactEncoder().encode(value)
        #expect(try CompactDecoder().decode(T.self, from: bytes) == value)
        return bytes
    }

    @Test func valuesSurviveARoundTrip() throws {
        let value = Everything(
            flag: true, small: -128, big: .max, negative: .min, ratio: -1.5, text: "héllo ✓", emptyText: "", missing: nil,
            list: [0, 1, -1, 300, .max, .min], nested: [[], ["a"], ["b", ""]],
            table: ["origin": Point(x: 0, y: 0), "far": Point(x: -99999, y: 1 << 40)], numbered: [1: "one", -7: "minus seven"],
            shapes: [.circle(radius: 2.5), .polygon([Point(x: 1, y: 2)]), .empty], optionals: [1, nil, 3])
        _ = try roundTrip(value)
        _ = try roundTrip(42)
        _ = try roundTrip("plain")
        _ = try roundTrip([UInt8](repeating: 7, count: 1000))
        _ = try roundTrip(Double.infinity)
        _ = try roundTrip(Optional<Int>.none)
        _ = try roundTrip(Optional<String>.some(""))
    }

    @Test func itIsCompact() throws {
        #expect(try roundTrip(5) == [2, 10])
        #expect(try roundTrip(Point(x: 1, y: 2)).count == 10)
        #expect(try roundTrip(Optional<Int>.none) == [0])
        #expect(try roundTrip(true) == [2, 1])
    }

    @Test func malformedInputThrowsADecodingError() throws {
        let good = try CompactEncoder().encode(Point(x: 1, y: 2))
        for bad in [[], Array(good.dropLast()), good + [0], [2, 5], [0x80], [9, 1, 2]] as [[UInt8]] {
            #expect(throws: DecodingError.self) { try CompactDecoder().decode(Point.self, from: bad) }
        }
        #expect(throws: DecodingError.self) { try CompactDecoder().decode(Bool.self, from: [2, 7]) }
        #expect(throws: DecodingError.self) { try CompactDecoder().decode(UInt8.self, from: try CompactEncoder().encode(300)) }
        #expect(throws: DecodingError.self) { try CompactDecoder().decode(Int.self, from: [0]) }
        #expect(throws: DecodingError.self) { try CompactDecoder().decode(Double.self, from: [3, 1, 2]) }
        // A field the type needs and the data lacks names itself.
        struct Wider: Codable { var x: Int; var z: Int }
        do {
            _ = try CompactDecoder().decode(Wider.self, from: good)
            Issue.record("decoded a missing field")
        } catch DecodingError.keyNotFound(let key, _) {
            #expect(key.stringValue == "z")
        }
    }
}
