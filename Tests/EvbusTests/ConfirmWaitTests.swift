import Evbus
import EvbusTestSupport
import Glibc
import Testing

/// `waitForConfirms` against a broker that stopped answering (SIGSTOP): it ends at its timeout,
/// or when its task is cancelled, not when the broker comes back.
@Suite struct ConfirmWaitTests {
    /// Runs `body` in a task and says whether it ended while the broker was still stopped.
    func endsWhileStopped(_ broker: BrokerProcess, cancel: Bool, _ body: @escaping @Sendable () async throws -> Void) async -> (ended: Bool, error: (any Error)?) {
        let task = Task { try await body() }
        if cancel { task.cancel() }
        let whileStopped = await outcome(of: task)
        broker.process.signal(SIGCONT)
        let result = await task.result
        if case .failure(let error) = result { return (whileStopped != nil, error) }
        return (whileStopped != nil, nil)
    }

    @Test func aWaitForConfirmsTimesOutWhileTheBrokerIsStopped() async throws {
        let broker = try await BrokerProcess()
        let peer = try await Peer.connect(to: broker.socketPath, name: "confirmer")
        _ = try await peer.declareQueue("confirmed")
        try #require(await broker.process.stopAndWaitUntilStopped())
        try await peer.publish(to: "", key: "confirmed", "x", confirm: true)
        let (ended, error) = await endsWhileStopped(broker, cancel: false) { try await peer.waitForConfirms(timeout: .milliseconds(200)) }
        #expect(ended, "waitForConfirms outlived its timeout")
        #expect((error as? EvbusError)?.code == .timeout, "\(String(describing: error))")
        try await peer.waitForConfirms()  // the broker is back: the confirm comes
        await peer.close()
    }

    @Test func aCancelledWaitForConfirmsEndsWhileTheBrokerIsStopped() async throws {
        let broker = try await BrokerProcess()
        let peer = try await Peer.connect(to: broker.socketPath, name: "confirmer")
        _ = try await peer.declareQueue("confirmed")
        try #require(await broker.process.stopAndWaitUntilStopped())
        try await peer.publish(to: "", key: "confirmed", "x", confirm: true)
        let (ended, error) = await endsWhileStopped(broker, cancel: true) { try await peer.waitForConfirms(timeout: .seconds(600)) }
        #expect(ended, "a cancelled waitForConfirms waited for the broker")
        #expect(error is CancellationError, "\(String(describing: error))")
        try await peer.waitForConfirms()
        await peer.close()
    }
}
