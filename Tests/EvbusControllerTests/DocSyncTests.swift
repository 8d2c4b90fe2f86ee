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
        let doc = try String(contentsOf: Self.root.appendingPathComponent("docs/CONTROLLER.md"), encoding: .utf8)
        let tests = try ["Tests/EvbusControllerTests/DocExampleTests.swift", "Tests/EvbusTests/DocExampleTests.swift"]
            .map { try String(contentsOf: Self.root.appendingPathComponent($0), encoding: .utf8) }
            .map(lines)
        let blocks = doc.components(separatedBy: "```swift\n").dropFirst().map { $0.components(separatedBy: "\n```")[0] }
        #expect(blocks.count >= 15)
        for block in blocks {
            let wanted = lines(block)
            let found = tests.contains { file in
                file.indices.contains { start in
                    start + wanted.count <= file.count && Array(file[start..<(start + wanted.count)]) == wanted
                }
            }
            #expect(found, "docs/CONTROLLER.md example not found in a test:\n\(block)")
        }
    }
}
