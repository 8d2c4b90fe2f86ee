import Foundation
import Testing

/// docs/CONTROLLER.md promises its examples are compiled by tests: every ```swift block in it must
/// appear, line for line (indentation aside), in one of the doc-example test files.
@Suite struct DocSyncTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    func lines(_ text: String) -> [String] {
        text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
    }

    @Test func everyControllerDocExampleIsATest() throws {
        try expectExamplesCompiled(doc: "docs/CONTROLLER.md", in: [
            "Tests/EvbusControllerTests/DocExampleTests.swift", "Tests/EvbusTests/DocExampleTests.swift", "Tests/EvbusPublicAPITests/SocketDocExampleTests.swift",
            "Tests/EndToEndTests/ProcessPoolTests.swift", "Sources/evbus-test-peer/Main.swift",
        ], atLeast: 15)
    }

    @Test func everyRoutingAndRPCDocExampleIsATest() throws {
        for doc in ["docs/ROUTING.md", "docs/RPC.md"] {
            try expectExamplesCompiled(doc: doc, in: ["Tests/EvbusTests/RoutingDocExampleTests.swift"], atLeast: 3)
        }
    }

    @Test func everyLibraryDocExampleIsATest() throws {
        try expectExamplesCompiled(doc: "docs/LIBRARY.md", in: ["Tests/EvbusTests/LibraryDocExampleTests.swift"], atLeast: 7)
    }

    @Test func everyBridgeDocExampleIsATest() throws {
        try expectExamplesCompiled(doc: "docs/BRIDGE.md", in: ["Tests/EndToEndTests/BridgeTests.swift"], atLeast: 1)
    }

    func expectExamplesCompiled(doc path: String, in files: [String], atLeast minimum: Int) throws {
        let doc = try String(contentsOf: Self.root.appendingPathComponent(path), encoding: .utf8)
        let tests = try files
            .map { try String(contentsOf: Self.root.appendingPathComponent($0), encoding: .utf8) }
            .map(lines)
        let blocks = doc.components(separatedBy: "```swift\n").dropFirst().map { $0.components(separatedBy: "\n```")[0] }
        #expect(blocks.count >= minimum, "\(path) has only \(blocks.count) Swift examples")
        for block in blocks {
            let wanted = lines(block)
            let found = tests.contains { file in
                file.indices.contains { start in
                    start + wanted.count <= file.count && Array(file[start..<(start + wanted.count)]) == wanted
                }
            }
            #expect(found, "\(path) example not found in a test:\n\(block)")
        }
    }
}
