import Evbus
import EvbusTestSupport
import Foundation
import Synchronization
import Testing

/// Issue 16 bug 3: a responder killed inside its handler gives the caller `responderGone`, and a
/// request whose caller has given up or gone is never run, by any responder started later.
@Suite struct RequestFaultTests {
    /// Starts `evbus-test-peer blocking-responder` on `queue` and waits until it consumes.
    func blockingResponder(_ broker: BrokerProcess, queue: String, marker: String, probe: Peer) async throws -> RunningProcess {
        let p = try RunningProcess(TestPaths.testPeerBinary, ["blocking-responder", broker.socketPath, queue, marker])
        #expect(try await eventually { try await summary(queue, probe)?.consumers == 1 })
        return p
    }

    func summary(_ queue: String, _ peer: Peer) async throws -> QueueSummary? {
        try await peer.topology().queues.first { $0.name == queue }
    }

    func marker(_ tag: String) -> String {
        TestPaths.file(tag, ".started")
    }

    func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    func code(of call: Task<String, any Error>) async -> EvbusError.Code? {
        do {
            _ = try await call.value
            return nil
        } catch let e as EvbusError {
            return e.code
        } catch {
            return nil
        }
    }

    @Test func aResponderKilledInsideItsHandlerGivesTheCallerResponderGone() async throws {
        let broker = try await BrokerProcess()
        let probe = try await Peer.connect(to: broker.socketPath, name: "probe")
        let started = marker("gone")
        let responder = try await blockingResponder(broker, queue: "jobs", marker: started, probe: probe)
        let caller = try await Peer.connect(to: broker.socketPath, name: "caller")
        let call = Task { try await caller.request(to: .queue("jobs"), "work", timeout: .seconds(120)).text }
        #expect(await eventually { exists(started) })
        responder.signal(SIGKILL)
        #expect(await code(of: call) == .responderGone)
        #expect(try await summary("jobs", probe)?.ready == 0)  // not put back for someone else to run
        await caller.close()
        await probe.close()
        unlink(started)
    }

    /// A caller whose request waits behind a busy responder gives up (or goes); the responder is
    /// killed and another starts: the abandoned request must not run, the next one must.
    @Test(arguments: ["timed out", "disconnected"])
    func aRequestNobodyWaitsForIsNeverRunByALaterResponder(how: String) async throws {
        let broker = try await BrokerProcess()
        let probe = try await Peer.connect(to: broker.socketPath, name: "probe")
        let started = marker("abandoned")
        let first = try await blockingResponder(broker, queue: "jobs", marker: started, probe: probe)
        let busyCaller = try await Peer.connect(to: broker.socketPath, name: "busy-caller")
        let busy = Task { try await busyCaller.request(to: .queue("jobs"), "A", timeout: .seconds(120)).text }
        #expect(await eventually { exists(started) })

        let leaving = try await Peer.connect(to: broker.socketPath, name: "leaving")
        let timeout: Duration = how == "timed out" ? .milliseconds(300) : .seconds(120)
        let abandoned = Task { try await leaving.request(to: .queue("jobs"), "B", timeout: timeout).text }
        // B waits behind A: delivered to the blocked responder (A's ACK freed its window), unread.
        #expect(try await eventually { try await summary("jobs", probe).map { $0.ready + $0.unacked } == 1 })
        if how == "timed out" {
            #expect(await code(of: abandoned) == .timeout)
        } else {
            await leaving.close()
            #expect(await code(of: abandoned) != nil)
        }

        first.signal(SIGKILL)
        #expect(await code(of: busy) == .responderGone)
        // B went back to the queue: the broker drops it, at its expiration (counted from when the
        // broker received it, a moment after the caller's timeout started) or at once (its caller
        // left). Only then does a responder start; B must not reach it.
        let counter = how == "timed out" ? "expired" : "requests_caller_gone"
        #expect(try await eventually { (try await probe.brokerStats().first { $0.name == counter }?.value ?? 0) >= 1 })
        let ran = Collector<String>()
        let worker = try await Peer.connect(to: broker.socketPath, name: "later")
        _ = try await worker.respond(on: "jobs") { (request: Request) throws -> [UInt8] in
            ran.add(request.text)
            return Array("done \(request.text)".utf8)
        }
        let caller = try await Peer.connect(to: broker.socketPath, name: "caller")
        #expect(try await caller.request(to: .queue("jobs"), "C", timeout: .seconds(60)).text == "done C")
        #expect(ran.items == ["C"])
        #expect(try await summary("jobs", probe)?.ready == 0)
        for p in [caller, worker, busyCaller, probe] { await p.close() }
        if how == "timed out" { await leaving.close() }
        unlink(started)
    }

    /// A request delivered to a responder whose handlers are all busy waits there; if its caller
    /// gives up meanwhile, it is dropped when a handler frees instead of run.
    @Test func aRequestThatTimedOutWhileWaitingForAHandlerIsNotRun() async throws {
        let broker = try await BrokerProcess()
        let responderPeer = try await Peer.connect(to: broker.socketPath, name: "responder")
        let gate = AsyncGate()
        let ran = Collector<String>()
        _ = try await responderPeer.respond(on: "jobs", prefetch: 4, concurrency: 1) { (request: Request) async throws -> [UInt8] in
            ran.add(request.text)
            if request.text == "A" { await gate.wait() }
            return Array("done \(request.text)".utf8)
        }
        let caller = try await Peer.connect(to: broker.socketPath, name: "caller")
        let a = Task { try await caller.request(to: .queue("jobs"), "A", timeout: .seconds(120)).text }
        #expect(await eventually { ran.items == ["A"] })
        let b = Task { try await caller.request(to: .queue("jobs"), "B", timeout: .milliseconds(200)).text }
        #expect(await code(of: b) == .timeout)
        try await Task.sleep(for: .milliseconds(100))  // margin: B arrived a little after it was sent
        gate.open()
        #expect(try await a.value == "done A")
        #expect(try await caller.request(to: .queue("jobs"), "C", timeout: .seconds(60)).text == "done C")
        #expect(ran.items == ["A", "C"])
        await caller.close()
        await responderPeer.close()
    }
}

/// Suspends waiters until `open()`.
final class AsyncGate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))
    func wait() async {
        await withCheckedContinuation { c in
            let now = state.withLock { s -> Bool in
                if !s.open { s.waiters.append(c) }
                return s.open
            }
            if now { c.resume() }
        }
    }
    func open() {
        for c in state.withLock({ s -> [CheckedContinuation<Void, Never>] in
            s.open = true
            defer { s.waiters = [] }
            return s.waiters
        }) { c.resume() }
    }
}
