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

    /// The bridge scenario: its own nats-server, two brokers, two bridges; every line reported,
    /// nothing lost (the exit status says so too).
    @Test func theBridgeScenarioRunsBesidePlainNATS() async throws {
        guard NATSServerProcess.binary != nil else { throw TestSupportError("nats-server is not installed (apt-get install -y nats-server)") }
        let r = try await RunningProcess.runEvbus(["bench", "--scenario", "bridge", "--messages", "300"], seconds: 180)
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        for name in ["bridge A->NATS->B", "nats pubsub", "bridge export A->NATS", "bridge import NATS->B", "bridge latency@1k",
                     "nats latency@1k", "bridge rpc B->A", "nats rpc", "throughput bridge/nats", "round trip p50 bridge/nats",
                     "bridge rpc NATS->A", "bridge rpc B->NATS", "evbus rpc (on A)", "floor (nats+2 evbus)/nats", "cpu/msg bridge A->NATS->B"] {
            #expect(r.stdout.contains(name), "\(name) missing: \(r.stdout)")
        }
        #expect(!r.stdout.contains("OUT-OF-ORDER") && r.stdout.components(separatedBy: "lost 0").count == 7, "\(r.stdout)")
    }

    /// `--against nats` drives a real server through EvbusNATS.
    @Test func theNATSScenariosRunAgainstARealServer() async throws {
        let nats = try await NATSServerProcess()
        let r = try await RunningProcess.runEvbus([
            "bench", "--against", "nats", "--address", "127.0.0.1:\(nats.port)", "--scenario", "pubsub,fanout,rpc,idle",
            "--messages", "400", "--connections", "10", "--warm-up", "2", "--server-pid", "\(nats.process.pid)",
        ], seconds: 120)
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        let lines = r.stdout.split(separator: "\n")
        #expect(lines.first { $0.hasPrefix("nats pubsub") }?.contains("received 400 lost 0") == true, "\(r.stdout)")
        #expect(lines.first { $0.hasPrefix("nats fanout") }?.contains("received 4000 lost 0") == true)
        #expect(lines.first { $0.hasPrefix("nats rpc") }?.contains("calls 400 clients 1") == true)
        #expect(lines.first { $0.hasPrefix("nats idle") }?.contains("10 connections (after 2)") == true)
    }
}
