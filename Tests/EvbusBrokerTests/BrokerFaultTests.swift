import Evbus
import EvbusIO
import EvbusTestSupport
import EvbusWire
import Foundation
import Testing

/// The broker when its clients or its owner misbehave: a publisher that dies while paused by
/// backpressure, and a broker used after it was shut down. Checked by state and CPU time.
@Suite struct BrokerFaultTests {
    static func threadCPUNanos() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
        return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
    }

    @Test func aPublisherThatDiesWhilePausedIsClosedAndTheBrokerSleeps() async throws {
        let broker = try InProcessBroker { config in
            config.highWatermarkBytes = 64 << 10
            config.lowWatermarkBytes = 16 << 10
            config.slowConsumerPolicy = .backpressure
        }
        defer { broker.shutdown() }
        // A subscriber that reads nothing (like a stopped `evbus sub`).
        let stalled = try RawClient.handshaken(broker.socketPath, name: "stalled")
        stalled.send(.subscribe(subscriptionID: 1, pattern: "t.#"))
        guard case .ok = try stalled.readFrame() else { throw TestSupportError("subscribe failed") }
        // A publisher writing large messages until the broker stops reading it and its socket fills.
        var publisher: RawClient? = try RawClient.handshaken(broker.socketPath, name: "publisher")
        let fd = publisher!.fd
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        let frame = Frame.publish(topic: "t.x", properties: .none, payload: [UInt8](repeating: 1, count: 32 << 10)).encoded()
        var full = false
        var refusedInARow = 0
        for _ in 0..<10_000 where !full {
            let n = frame.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EAGAIN {
                // Full for now; full for good once the broker has stopped reading it.
                refusedInARow += 1
                full = refusedInARow >= 5
                try await Task.sleep(nanoseconds: 50_000_000)
            } else {
                refusedInARow = 0
            }
        }
        #expect(full, "the broker never paused the publisher")
        #expect(broker.stat("backpressure_pauses") >= 1)
        #expect(broker.stat("connections") == 2)
        // The publisher dies: its connection must close although the broker is not reading it.
        publisher = nil
        #expect(await eventually(10) { broker.stat("connections") == 1 }, "the dead publisher's connection stayed open")
        let loop = broker.broker.loop
        let before = try await loop.submit { Self.threadCPUNanos() }
        try await Task.sleep(nanoseconds: 300_000_000)
        let after = try await loop.submit { Self.threadCPUNanos() }
        #expect(after - before < 100_000_000, "the broker used \((after - before) / 1_000_000) ms of CPU in 300 ms with nothing to do")
        _ = stalled
    }

    @Test func aShutDownBrokerRefusesInsteadOfHanging() async throws {
        let broker = try InProcessBroker()
        await broker.broker.shutdown()
        #expect(broker.broker.loop.isStopped)
        // A second shutdown returns at once; statistics are refused with a typed error.
        await broker.broker.shutdown()
        let counters = await Task.detached { () -> Result<[StatEntry], EventLoopError> in
            Result { () throws(EventLoopError) in try broker.broker.statistics() }
        }.value
        #expect(throws: EventLoopError.stopped) { try counters.get() }
        await #expect(throws: EventLoopError.stopped) { try await broker.broker.loop.submit { 1 } }
    }

    @Test func silentClientsAcceptedAtDifferentTimesAllTimeOutAndOthersStay() async throws {
        // One deadline queue serves every handshake: each silent client is closed at its own
        // deadline, and a client that finished its handshake in between is left alone.
        let broker = try InProcessBroker { $0.handshakeTimeoutMillis = 300 }
        defer { broker.shutdown() }
        var silent: [RawClient] = []
        silent.append(try RawClient(socketPath: broker.socketPath))
        try await Task.sleep(nanoseconds: 100_000_000)
        let polite = try RawClient.handshaken(broker.socketPath, name: "polite")
        silent.append(try RawClient(socketPath: broker.socketPath))
        try await Task.sleep(nanoseconds: 100_000_000)
        silent.append(try RawClient(socketPath: broker.socketPath))
        for client in silent {
            let frames = client.readUntilClosed()
            guard case .error(.handshakeTimeout, 0, _) = frames.last else {
                Issue.record("expected handshake-timeout, got \(frames)"); continue
            }
        }
        #expect(broker.stat("protocol_errors") == 3)
        polite.send(.ping(token: 9))
        guard case .pong(9) = try polite.readFrame() else { Issue.record("the handshaken client was closed"); return }
    }
}
