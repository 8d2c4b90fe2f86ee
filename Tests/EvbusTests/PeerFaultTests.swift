import Evbus
import EvbusIO
import EvbusTestSupport
import Foundation
import Testing

/// A peer whose broker goes away while the peer is not reading (its subscription buffer is full).
@Suite struct PeerFaultTests {
    static func threadCPUNanos() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
        return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
    }

    @Test(arguments: [false, true])
    func aPeerWithAFullSubscriptionBufferNoticesTheBrokerDyingAndSleeps(reconnecting: Bool) async throws {
        let broker = try await BrokerProcess()
        let loop = try EventLoop.startThread(name: "peer-fault")
        defer { loop.stopAndJoin() }
        var options = Peer.Options()
        options.subscriptionBuffer = 16
        options.reconnect = reconnecting ? .standard : .never
        let peer = try await Peer.connect(to: broker.socketPath, name: "full", loop: loop, options: options)
        let subscription = try await peer.subscribe("flood")
        var once = Peer.Options()
        once.reconnect = .never  // its publishes fail when the broker dies (a reconnecting one's would wait)
        let publisher = try await broker.connect("publisher", options: once)
        // Far more than the buffer holds: the peer stops reading, the broker's queue for it fills.
        let payload = [UInt8](repeating: 9, count: 16 << 10)
        let publishing = Task { for _ in 0..<2000 { try await publisher.publish("flood", payload) } }
        try await Task.sleep(nanoseconds: 300_000_000)
        broker.process.signal(SIGKILL)
        _ = await broker.process.waitForExit()
        publishing.cancel()
        _ = await publishing.result
        // The peer's loop must not spin on the hang-up it cannot read past, nor on trying to
        // reconnect to a broker that is not there...
        try await Task.sleep(nanoseconds: 100_000_000)
        let before = try await loop.submit { Self.threadCPUNanos() }
        try await Task.sleep(nanoseconds: 300_000_000)
        let after = try await loop.submit { Self.threadCPUNanos() }
        #expect(after - before < 100_000_000, "the peer's loop used \((after - before) / 1_000_000) ms of CPU in 300 ms")
        if reconnecting {
            // ...a reconnecting peer goes on waiting for a broker; closing it ends the
            // iteration normally, after the events that were buffered.
            await peer.close()
            var drained = 0
            for try await _ in subscription { drained += 1 }
            #expect(drained > 0)
            return
        }
        // ...and without reconnecting, the subscription ends with the loss, after the events that were buffered.
        do {
            for try await _ in subscription {}
            Issue.record("iteration ended without an error")
        } catch let error as EvbusError {
            #expect(error.code == .connectionLost)
        }
    }
}
