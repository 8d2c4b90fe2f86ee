import Evbus
import EvbusTestSupport
import Foundation
import Testing

/// `evbus top` as a pipe (plain snapshots) and under a pseudo-terminal made by `script` (redrawn
/// in place, q and Ctrl-C quit, the terminal restored).
@Suite struct TopTests {
    static let enterScreen = "\u{1B}[?1049h"
    static let leaveScreen = "\u{1B}[?25h\u{1B}[?1049l"

    func busyBroker() async throws -> (BrokerProcess, Peer) {
        let broker = try await BrokerProcess()
        let peer = try await Peer.connect(to: broker.socketPath, name: "worker")
        _ = try await peer.declareQueue("jobs")
        for i in 0..<7 { try await peer.publish(to: "", key: "jobs", Array("job \(i)".utf8)) }
        _ = try await peer.subscribe("sensors.#")
        try await peer.flush()
        return (broker, peer)
    }

    @Test func throughAPipeItPrintsPlainSnapshots() async throws {
        let (broker, peer) = try await busyBroker()
        let run = try await RunningProcess.runEvbus(["top", "--count", "2", "--interval", "200", "--socket", broker.socketPath])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(!run.stdout.contains("\u{1B}"), "no terminal control sequences in a pipe")
        let snapshots = run.stdout.components(separatedBy: "\nevbus top ")
        #expect(snapshots.count == 2, "\(run.stdout)")
        #expect(snapshots[0].hasPrefix("evbus top  connections") && snapshots[0].contains("published/s -"))
        #expect(snapshots[1].contains("published/s 0"))  // the second has a rate: nothing was published between them
        let jobs = run.stdout.split(separator: "\n").first { $0.hasPrefix("jobs ") }
        #expect(jobs?.split(separator: " ").dropFirst().first == "7", "ready column: \(String(describing: jobs))")
        #expect(run.stdout.contains("worker") && run.stdout.contains("sensors.#"))
        await peer.close()
    }

    /// Runs `evbus top` under `script` (a pseudo-terminal), with `stty -g` before and after.
    func underATerminal(_ broker: BrokerProcess, key: String) async throws -> (RunningProcess, String) {
        let command = "stty -g; \(TestPaths.evbusBinary) top --interval 200 --socket \(broker.socketPath); echo exit=$?; stty -g"
        let script = try RunningProcess("/usr/bin/script", ["-q", "-e", "-c", command, "/dev/null"])
        #expect(await eventually { script.stdout.contains("CONN") })  // a first frame is drawn
        script.writeStdin(key)
        let status = await script.waitForExit(seconds: 30)
        return (script, "\(status)")
    }

    @Test func onATerminalItRedrawsInPlaceAndQRestoresTheTerminal() async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/script") else { return }
        let (broker, peer) = try await busyBroker()
        let (script, status) = try await underATerminal(broker, key: "q")
        let out = script.stdout
        #expect(status == "0", "\(out)")
        #expect(out.contains(Self.enterScreen) && out.contains("\u{1B}[H\u{1B}[2J"))
        let lines = out.replacingOccurrences(of: "\r", with: "").split(separator: "\n")
        let settings = lines.filter { $0.split(separator: ":").count > 10 && !$0.contains(" ") }
        #expect(settings.count == 2 && settings[0] == settings.last!, "stty before and after: \(settings)")
        #expect(out.contains(Self.leaveScreen + "exit=0"))
        await peer.close()
    }

    @Test func onATerminalCtrlCQuitsAndLeavesTheScreen() async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/script") else { return }
        let (broker, peer) = try await busyBroker()
        let (script, _) = try await underATerminal(broker, key: "\u{03}")  // the terminal turns it into SIGINT
        #expect(script.stdout.contains(Self.leaveScreen), "\(script.stdout.suffix(200))")
        await peer.close()
    }

    @Test func aBadIntervalIsRefused() async throws {
        let run = try await RunningProcess.runEvbus(["top", "--interval", "5"])
        #expect(run.status == 64 && run.stderr.contains("--interval"), "\(run.stderr)")
    }
}
