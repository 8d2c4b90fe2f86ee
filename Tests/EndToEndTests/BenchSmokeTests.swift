import EvbusTestSupport
import Foundation
import Testing

/// `evbus bench` itself works end to end (its own broker process, real peers): tiny counts, and
/// only what it reports is checked, never how fast (speed is recorded in docs/BENCHMARKS.md).
@Suite struct BenchSmokeTests {
    @Test func requestReplyScenariosRunAndReportTheirFigures() async throws {
        let r = try await RunningProcess.runEvbus(["bench", "--scenario", "rpc,rpc-8,rpc-poll", "--messages", "400"], seconds: 120)
        #expect(r.status == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n").map(String.init)
        for (name, calls, clients) in [("rpc ", 400, 1), ("rpc-8 ", 400, 8), ("rpc-poll ", 400, 1)] {
            let line = lines.first { $0.hasPrefix(name) }
            #expect(line?.contains("calls \(calls) clients \(clients)") == true, "\(r.stdout)")
            #expect(line?.contains("latency p50") == true)
            #expect(line?.contains("CPU per round trip: client") == true)
            #expect(line?.contains("broker") == true)
        }
    }

    @Test func theIdleScenarioMeasuresAfterItsWarmUp() async throws {
        let r = try await RunningProcess.runEvbus(["bench", "--scenario", "idle", "--connections", "20", "--warm-up", "5"], seconds: 120)
        #expect(r.status == 0, "\(r.stderr)")
        let line = r.stdout.split(separator: "\n").first { $0.hasPrefix("idle") }
        #expect(line?.contains("20 connections (after 5)") == true, "\(r.stdout)")
        #expect(line?.contains("KiB per connection") == true)
    }

    @Test func theBurstAndShortScenariosReportBrokerMemory() async throws {
        let r = try await RunningProcess.runEvbus(["bench", "--scenario", "burst,short", "--connections", "30"], seconds: 120)
        #expect(r.status == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n")
        let burst = lines.first { $0.hasPrefix("burst") }
        #expect(burst?.contains("30 connections, 1 KiB to each, twice") == true, "\(r.stdout)")
        #expect(burst?.contains("per connection over idle after rounds 1 and 2") == true)
        let short = lines.first { $0.hasPrefix("short") }
        #expect(short?.contains("30 connections opened and closed") == true, "\(r.stdout)")
        #expect(short?.contains("MiB kept") == true)
    }
}
