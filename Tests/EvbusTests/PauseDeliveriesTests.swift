import Evbus
import EvbusTestSupport
import Testing

/// `Peer.pauseDeliveries()`: nothing is handled while paused, everything after, in order; pauses
/// nest, and a pause from inside a handler stops the rest of that read.
@Suite struct PauseDeliveriesTests {
    @Test func nothingIsHandledWhilePausedAndEverythingAfterInOrder() async throws {
        let broker = try InProcessBroker()
        let subscriber = try await Peer.connect(to: broker.socketPath, name: "paused")
        let got = Collector<String>()
        _ = try await subscriber.subscribeViews("ticks") { got.add(String(decoding: $0.payload, as: UTF8.self)) }
        let publisher = try await Peer.connect(to: broker.socketPath, name: "ticker")
        subscriber.pauseDeliveries()
        subscriber.pauseDeliveries()  // nested: two resumes needed
        for i in 0..<10 { try await publisher.publish("ticks", "\(i)") }
        try await publisher.flush()
        try await Task.sleep(for: .milliseconds(300))
        #expect(got.count == 0)
        subscriber.resumeDeliveries()
        try await Task.sleep(for: .milliseconds(300))
        #expect(got.count == 0, "one pause is still in force")
        subscriber.resumeDeliveries()
        #expect(await eventually { got.count == 10 })
        #expect(got.items == (0..<10).map(String.init))
        await publisher.close()
        await subscriber.close()
    }

    /// A handler that pauses on the first event: the rest of what was read with it waits.
    @Test func aPauseFromAHandlerStopsTheRestOfTheRead() async throws {
        let broker = try InProcessBroker()
        let subscriber = try await Peer.connect(to: broker.socketPath, name: "paused")
        let got = Collector<String>()
        _ = try await subscriber.subscribeViews("ticks") { view in
            got.add(String(decoding: view.payload, as: UTF8.self))
            if got.count == 1 { subscriber.pauseDeliveries() }
        }
        let publisher = try await Peer.connect(to: broker.socketPath, name: "ticker")
        for i in 0..<50 { try await publisher.publish("ticks", "\(i)") }
        try await publisher.flush()
        #expect(await eventually { got.count >= 1 })
        try await Task.sleep(for: .milliseconds(300))
        #expect(got.count == 1)
        subscriber.resumeDeliveries()
        #expect(await eventually { got.count == 50 })
        #expect(got.items == (0..<50).map(String.init))
        await publisher.close()
        await subscriber.close()
    }
}
