import EvbusTestSupport
import Foundation
import Testing

/// Misuse of the command line: `Error: ...`, the usage line, a hint, exit code 64.
@Suite struct CLIUsageTests {
    @Test(arguments: [
        (["pub"], "Missing expected argument '<topic>'"),
        (["pub", "a", "b", "c"], "Unexpected argument 'c'"),
        (["sub"], "Missing expected argument '<pattern>'"),
        (["sub", "a", "--count", "zero"], "The value 'zero' is invalid for '--count <n>'"),
        (["sub", "a", "--count"], "Missing value for '--count <n>'"),
        (["sub", "a", "--bogus"], "Unknown option '--bogus'"),
        (["broker", "--log-level", "loud"], "The value 'loud' is invalid for '--log-level <level>'"),
        (["broker", "--data-dir", ""], "The value '' is invalid for '--data-dir <dir>'"),
        (["declare", "exchange", "x", "--type", "fanout", "--durable=yes"], "The flag '--durable' does not take a value"),
        (["stats", "--json=yes"], "The flag '--json' does not take a value"),
        (["bench", "--scenario", "warp"], "Unknown scenario 'warp'"),
        (["bench", "--scenario", "idle", "--warm-up", "-3"], "The value '-3' is invalid for '--warm-up <n>'"),
        (["bench", "--against", "kafka"], "The value 'kafka' is invalid for '--against <broker>'"),
        (["bench", "--against", "redis", "--scenario", "workqueue"], "Scenario 'workqueue' is not run against redis"),
        (["bench", "--against", "rabbitmq", "--scenario", "rpc"], "Scenario 'rpc' is not run against rabbitmq"),
        (["frobnicate"], "Unknown subcommand 'frobnicate'"),
        ([], "Missing subcommand"),
    ])
    func misuseExits64WithErrorAndUsage(_ args: [String], _ message: String) async throws {
        let r = try await RunningProcess.runEvbus(args)
        #expect(r.status == 64, "\(args): \(r.stderr)")
        #expect(r.stderr.contains("Error: \(message)"), "\(r.stderr)")
        #expect(r.stderr.contains("Usage: evbus") || r.stderr.contains("USAGE: evbus"))
        #expect(r.stdout.isEmpty)
    }

    @Test(arguments: ["broker", "pub", "sub", "stats", "bench"])
    func everyCommandHasHelp(_ command: String) async throws {
        let r = try await RunningProcess.runEvbus([command, "--help"])
        #expect(r.status == 0)
        #expect(r.stdout.contains("USAGE: evbus \(command)"))
        #expect(r.stdout.contains("--socket") || command == "bench")
        let viaHelp = try await RunningProcess.runEvbus(["help", command])
        #expect(viaHelp.stdout == r.stdout)
    }

    @Test func topLevelHelpListsCommands() async throws {
        let r = try await RunningProcess.runEvbus(["--help"])
        #expect(r.status == 0)
        for c in ["broker", "pub", "sub", "stats", "bench"] { #expect(r.stdout.contains("  \(c)")) }
    }

    @Test func invalidTopicFromTheCLIIsAUsageError() async throws {
        let broker = try await BrokerProcess()
        let r = try await RunningProcess.runEvbus(["pub", "a..b", "x", "--socket", broker.socketPath])
        #expect(r.status == 64)
        #expect(r.stderr.contains("invalid topic 'a..b'"))
        await broker.stop()
    }

    /// A bad topic or pattern is a usage error (64) before any connection: with no broker too.
    @Test func badTopicsAndPatternsAreUsageErrorsWithNoBrokerToo() async throws {
        let path = TestPaths.socket("nobroker")
        let pub = try await RunningProcess.runEvbus(["pub", "a..b", "x", "--socket", path])
        #expect(pub.status == 64 && pub.stderr.contains("invalid topic 'a..b'"), "\(pub.stderr)")
        let sub = try await RunningProcess.runEvbus(["sub", "ok.topic", "a.#x", "--socket", path])
        #expect(sub.status == 64 && sub.stderr.contains("invalid pattern 'a.#x'"), "\(sub.stderr)")
    }

    @Test(arguments: [["pub", "t", "m"], ["sub", "t"], ["stats"]])
    func unreachableBrokerIsOneLineNamingThePath(_ args: [String]) async throws {
        let path = TestPaths.socket("nobroker")
        let r = try await RunningProcess.runEvbus(args + ["--socket", path])
        #expect(r.status == 1)
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1)
        #expect(r.stderr.contains("cannot reach the broker at \(path)"))
    }
}
