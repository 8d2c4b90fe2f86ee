import EvbusTestSupport
import Foundation
import Testing

/// Configs/evbus.service and Configs/evbus.socket: parsed and checked against the broker they
/// start, and verified by systemd's own `systemd-analyze verify` where the machine has it.
@Suite struct UnitFileTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// `[Section] key=value` lines (comments and blanks skipped), refusing anything else.
    func parse(_ name: String) throws -> [String: [String: String]] {
        let text = try String(contentsOf: Self.root.appendingPathComponent("Configs/\(name)"), encoding: .utf8)
        var sections: [String: [String: String]] = [:]
        var current: String?
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                current = String(line.dropFirst().dropLast())
                continue
            }
            let parts = line.split(separator: "=", maxSplits: 1).map(String.init)
            let section = try #require(current, "a key outside a section in \(name): \(line)")
            try #require(parts.count == 2, "not key=value in \(name): \(line)")
            #expect(sections[section]?[parts[0]] == nil, "\(parts[0]) twice in [\(section)] of \(name)")
            sections[section, default: [:]][parts[0]] = parts[1]
        }
        return sections
    }

    func flagValue(_ words: [String], _ flag: String) -> String? {
        words.firstIndex(of: flag).flatMap { $0 + 1 < words.count ? words[$0 + 1] : nil }
    }

    @Test func theServiceStartsTheBrokerAsANotifyServiceWithAWatchdog() async throws {
        let service = try parse("evbus.service")
        let s = try #require(service["Service"])
        #expect(s["Type"] == "notify" && s["NotifyAccess"] == "main")
        #expect(Int(s["WatchdogSec"] ?? "") ?? 0 > 0)
        #expect(s["ExecReload"] == "/bin/kill -HUP $MAINPID")
        // The graceful stop (2 s by default) fits well inside what systemd allows before SIGKILL.
        #expect(Int(s["TimeoutStopSec"] ?? "") ?? 0 >= 5)
        let words = try #require(s["ExecStart"]).split(separator: " ").map(String.init)
        #expect(words.first?.hasSuffix("/evbus") == true && words.dropFirst().first == "broker")
        // Every flag it passes is one `evbus broker` takes.
        let help = try await RunningProcess.runEvbus(["broker", "--help"])
        for flag in words where flag.hasPrefix("--") {
            #expect(help.stdout.contains(flag) || help.stderr.contains(flag), "evbus broker has no \(flag)")
        }
        #expect(flagValue(words, "--data-dir") == "/var/lib/" + (s["StateDirectory"] ?? "?"))
        #expect(service["Unit"]?["Requires"] == "evbus.socket" && service["Install"]?["Also"] == "evbus.socket")
    }

    @Test func theSocketIsTheOneTheServiceNames() throws {
        let socket = try parse("evbus.socket")
        let service = try parse("evbus.service")
        let s = try #require(socket["Socket"])
        let words = try #require(service["Service"]?["ExecStart"]).split(separator: " ").map(String.init)
        #expect(s["ListenStream"] == flagValue(words, "--socket"))
        let mode = try #require(s["SocketMode"])
        #expect(mode.count == 4 && UInt32(mode, radix: 8) != nil && UInt32(mode, radix: 8)! & 0o007 == 0, "no access for others: \(mode)")
        #expect(socket["Install"]?["WantedBy"] == "sockets.target")
    }

    @Test func systemdAnalyzeVerifiesBothUnits() async throws {
        let analyze = "/usr/bin/systemd-analyze"
        guard FileManager.default.isExecutableFile(atPath: analyze) else { return }  // not on this machine
        let dir = TestPaths.dataDirectory("units")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // systemd checks that ExecStart's program exists: point it at the built one.
        let service = try String(contentsOf: Self.root.appendingPathComponent("Configs/evbus.service"), encoding: .utf8)
            .replacingOccurrences(of: "/usr/local/bin/evbus", with: TestPaths.evbusBinary)
        try service.write(toFile: dir + "/evbus.service", atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(atPath: Self.root.appendingPathComponent("Configs/evbus.socket").path, toPath: dir + "/evbus.socket")
        let verify = try RunningProcess(analyze, ["verify", dir + "/evbus.service", dir + "/evbus.socket"])
        verify.closeStdin()
        let status = await verify.waitForExit(seconds: 60)
        #expect(status == 0 && verify.stderr.isEmpty, "systemd-analyze verify: \(verify.stderr)")
    }
}
