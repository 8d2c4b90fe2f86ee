import Evbus
import EvbusIO
import EvbusTestSupport
import Foundation
import Testing

/// The RPC tutorial with the real `evbus-fib` binaries, and `evbus rpc` / `evbus respond`.
@Suite struct FibTests {
    func fib(_ n: Int) -> UInt64 { n < 2 ? UInt64(n) : fib(n - 1) + fib(n - 2) }

    func fibProcess(_ args: [String], _ broker: BrokerProcess) throws -> RunningProcess {
        try RunningProcess(TestPaths.fibBinary, args + ["--socket", broker.socketPath])
    }

    func runFib(_ args: [String], _ broker: BrokerProcess) async throws -> (status: Int32, stdout: String, stderr: String) {
        let p = try fibProcess(args, broker)
        p.closeStdin()
        let status = await p.waitForExit(seconds: 60)
        return (status, p.stdout, p.stderr)
    }

    /// Starts a server and waits until its consumer is registered (counted before it starts).
    func server(_ broker: BrokerProcess, workers: Int = 2) async throws -> RunningProcess {
        let probe = try await Peer.connect(to: broker.socketPath, name: "probe")
        let before = (try? await probe.topology().queues.first { $0.name == "rpc_queue" }?.consumers) ?? 0
        let s = try fibProcess(["server", "--workers", "\(workers)"], broker)
        #expect(await eventually { ((try? await probe.topology().queues.first { $0.name == "rpc_queue" }?.consumers) ?? 0) > before })
        await probe.close()
        return s
    }

    @Test func fib30AndBadInput() async throws {
        let broker = try await BrokerProcess()
        let s = try await server(broker)
        let r = try await runFib(["client", "30"], broker)
        #expect(r.status == 0 && r.stdout == "fib(30) = 832040\n", "\(r.stderr)")
        for (input, reason) in [("ten", "not a number"), ("-1", "must not be negative"), ("46", "at most 45")] {
            let bad = try await runFib(["client", input], broker)
            #expect(bad.status == 1 && bad.stderr.contains("invalid-argument") && bad.stderr.contains(reason), "\(bad.stderr)")
        }
        // Still serving after bad input.
        #expect(try await runFib(["client", "10"], broker).stdout == "fib(10) = 55\n")
        let summary = try await runFib(["client", "15", "--count", "50", "--concurrency", "4"], broker)
        #expect(summary.status == 0 && summary.stdout.contains("fib(15) x 50") && summary.stdout.contains("calls/s"))
        s.signal(SIGTERM)
        #expect(await s.waitForExit() == 0)
        await broker.stop()
    }

    @Test func aLargeFibDoesNotStallTheServer() async throws {
        let broker = try await BrokerProcess()
        let s = try await server(broker, workers: 2)
        let client = try await Peer.connect(to: broker.socketPath)
        // fib(45) keeps one worker busy for a long time; the server's loop and its other worker
        // keep answering meanwhile.
        let big = Task { try await client.request(to: .queue("rpc_queue"), "45", timeout: .seconds(600)) }
        #expect(await eventually { (try? await client.topology().queues.first { $0.name == "rpc_queue" }?.acked) == 1 })
        for n in [10, 20, 5] {
            #expect(try await client.request(to: .queue("rpc_queue"), String(n), timeout: .seconds(30)).text == String(fib(n)))
        }
        #expect(await client.lateReplyCount() == 0)
        big.cancel()
        s.signal(SIGKILL)
        await client.close()
        await broker.stop()
    }

    @Test func aThousandConcurrentCallsAreMatchedAndTwoServersShareThem() async throws {
        let broker = try await BrokerProcess()
        let a = try await server(broker)
        let b = try await server(broker)
        let client = try await Peer.connect(to: broker.socketPath)
        let replies = try await withThrowingTaskGroup(of: (Int, Reply).self) { group in
            for i in 0..<1000 { group.addTask { (i, try await client.request(to: .queue("rpc_queue"), String(i % 20))) } }
            return try await group.reduce(into: [(Int, Reply)]()) { $0.append($1) }
        }
        #expect(replies.count == 1000)
        #expect(replies.allSatisfy { $0.1.text == String(fib($0.0 % 20)) })
        #expect(Set(replies.map(\.1.publisher)).count == 2, "both servers answered")
        await client.close()
        a.signal(SIGKILL)
        b.signal(SIGKILL)
        await broker.stop()
    }

    @Test func killingTheServerMidRequestFailsTheCallFast() async throws {
        let broker = try await BrokerProcess()
        let s = try await server(broker, workers: 1)
        let client = try await Peer.connect(to: broker.socketPath)
        let call = Task { try await client.request(to: .queue("rpc_queue"), "45", timeout: .seconds(120)) }
        // Accepted (acknowledged, computing) once it is neither ready nor unacknowledged in the queue.
        #expect(await eventually {
            let q = try? await client.topology().queues.first { $0.name == "rpc_queue" }
            return q?.acked == 1 && q?.ready == 0 && q?.unacked == 0
        })
        let start = ContinuousClock.now
        s.signal(SIGKILL)
        let error = await callError { _ = try await call.value }
        #expect(error?.code == .responderGone)
        #expect(ContinuousClock.now - start < .seconds(30))
        // No server left: the next call is answered at once with no-responder.
        #expect(await eventually { await callError { _ = try await client.request(to: .queue("rpc_queue"), "1") }?.code == .noResponder })
        await client.close()
        await broker.stop()
    }

    @Test func callsFailWithConnectionLostWhenTheBrokerStops() async throws {
        let broker = try await BrokerProcess()
        let s = try await server(broker, workers: 1)
        let client = try await Peer.connect(to: broker.socketPath)
        let call = Task { try await client.request(to: .queue("rpc_queue"), "45", timeout: .seconds(120)) }
        #expect(await eventually { (try? await client.topology().queues.first { $0.name == "rpc_queue" }?.acked) == 1 })
        await broker.stop()
        #expect(await callError { _ = try await call.value }?.code == .connectionLost)
        s.signal(SIGKILL)
    }

    @Test func rpcAndRespondCommands() async throws {
        let broker = try await BrokerProcess()
        let socket = broker.socketPath
        let upper = try RunningProcess.evbus(["respond", "upper", "--exec", "tr a-z A-Z", "--count", "2", "--socket", socket])
        let failing = try RunningProcess.evbus(["respond", "failing", "--exec", "echo 'no luck' >&2; exit 3", "--socket", socket])
        let slow = try RunningProcess.evbus(["respond", "slow", "--exec", "sleep 5", "--socket", socket])
        for q in ["upper", "failing", "slow"] { #expect(try await waitForConsumers(1, on: q, at: socket)) }
        let ok = try await RunningProcess.runEvbus(["rpc", "upper", "hello", "--socket", socket])
        #expect(ok.status == 0 && ok.stdout == "HELLO\n", "\(ok.stderr)")
        let piped = try await RunningProcess.runEvbus(["rpc", "upper", "--socket", socket], stdin: "from stdin")
        #expect(piped.stdout == "FROM STDIN\n")
        #expect(await upper.waitForExit() == 0)
        let remote = try await RunningProcess.runEvbus(["rpc", "failing", "x", "--socket", socket])
        #expect(remote.status == 1 && remote.stderr.contains("exit-3") && remote.stderr.contains("no luck"), "\(remote.stderr)")
        let start = ContinuousClock.now
        let nobody = try await RunningProcess.runEvbus(["rpc", "nobody", "x", "--timeout", "20000", "--socket", socket])
        #expect(nobody.status == 1 && nobody.stderr.contains("no responder"))
        #expect(ContinuousClock.now - start < .seconds(15))
        // A request the broker refuses fails at once with its reason, not at its deadline.
        let refused = try await RunningProcess.runEvbus(["rpc", "--exchange", "nosuchx", "k", "x", "--timeout", "20000", "--socket", socket])
        #expect(refused.status == 1 && refused.stderr.contains("no exchange named \"nosuchx\"") && !refused.stderr.contains("no reply"), "\(refused.stderr)")
        #expect(ContinuousClock.now - start < .seconds(30), "waited for the deadline")
        let late = try await RunningProcess.runEvbus(["rpc", "slow", "x", "--timeout", "200", "--socket", socket])
        #expect(late.status == 1 && late.stderr.contains("no reply"), "\(late.stderr)")
        let misuse = try await RunningProcess.runEvbus(["respond", "q", "--socket", socket])
        #expect(misuse.status == 64 && misuse.stderr.contains("--exec"))
        for args in [["rpc"], ["rpc", "q", "--timeout", "0"], ["rpc", "q", "--header", "nope"], ["respond", "q", "--exec", "x", "--prefetch", "0"]] {
            let r = try await RunningProcess.runEvbus(args + ["--socket", socket])
            #expect(r.status == 64 && r.stderr.contains("Usage: evbus"), "\(args): \(r.stderr)")
        }
        let fibMisuse = try await runFib(["client"], broker)
        #expect(fibMisuse.status == 64 && fibMisuse.stderr.contains("Missing expected argument"))
        #expect(try await runFib(["server", "--workers", "0"], broker).status == 64)
        #expect(try await runFib(["serve"], broker).status == 64)
        failing.signal(SIGKILL)
        slow.signal(SIGKILL)
        await broker.stop()
    }

    /// `respond --count` stops at Ctrl-C too, short of its count (it used to ignore the signal
    /// until the count was reached), and its last answer gets out before it exits.
    @Test func respondWithACountStopsAtItsCountOrAtCtrlC() async throws {
        let broker = try await BrokerProcess()
        let socket = broker.socketPath
        let patient = try RunningProcess.evbus(["respond", "echo", "--exec", "cat", "--count", "3", "--socket", socket])
        #expect(try await waitForConsumers(1, on: "echo", at: socket))
        let one = try await RunningProcess.runEvbus(["rpc", "echo", "one", "--socket", socket])
        #expect(one.status == 0 && one.stdout == "one\n", "\(one.stderr)")
        patient.signal(SIGINT)
        #expect(await patient.waitForExit(seconds: 20) == 0, "\(patient.stderr)")

        let counted = try RunningProcess.evbus(["respond", "echo", "--exec", "cat", "--count", "2", "--socket", socket])
        #expect(try await waitForConsumers(1, on: "echo", at: socket))
        for word in ["two", "three"] {
            let r = try await RunningProcess.runEvbus(["rpc", "echo", word, "--socket", socket])
            #expect(r.status == 0 && r.stdout == word + "\n", "\(r.stderr)")
        }
        #expect(await counted.waitForExit(seconds: 20) == 0, "\(counted.stderr)")
        await broker.stop()
    }

    @Test func scatterGatherAcrossThreeResponderProcesses() async throws {
        let broker = try await BrokerProcess()
        let socket = broker.socketPath
        let admin = try await Peer.connect(to: socket)
        try await admin.declareExchange("census", kind: .fanout)
        var responders: [RunningProcess] = []
        for i in 1...3 {
            _ = try await admin.declareQueue("node-\(i)")
            try await admin.bind(queue: "node-\(i)", exchange: "census")
            responders.append(try RunningProcess.evbus(["respond", "node-\(i)", "--exec", "echo node-\(i)", "--socket", socket]))
        }
        for i in 1...3 { #expect(try await waitForConsumers(1, on: "node-\(i)", at: socket)) }
        let start = ContinuousClock.now
        let replies = try await admin.requestAll(to: "census", key: "", Array("who?".utf8), within: .seconds(30))
        #expect(Set(replies.map(\.text)) == ["node-1\n", "node-2\n", "node-3\n"])
        #expect(ContinuousClock.now - start < .seconds(20), "ended when all three answered")
        for r in responders { r.signal(SIGKILL) }
        await admin.close()
        await broker.stop()
    }
}
