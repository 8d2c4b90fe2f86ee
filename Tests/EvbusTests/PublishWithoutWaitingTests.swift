import Evbus
import EvbusTestSupport
import Glibc
import Testing

/// `Peer.publishWithoutWaiting`: never suspends, says when the outbox is full, refuses what
/// `publish` refuses, and checks a caller-encoded properties block before anything is sent.
@Suite struct PublishWithoutWaitingTests {
    @Test func fromTheLoopWithPropertiesOrRawBlockInOrder() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let subscriber = try await Peer.connect(to: broker.socketPath, name: "sub")
        let events = try await subscriber.subscribe("relay.#")
        let relay = try await Peer.connect(to: broker.socketPath, name: "relay")
        var p = MessageProperties()
        p.contentType = "text/plain"
        p.headers = ["k": "v"]
        let props = p, block = p.encoded()
        // On the peer's own loop, as a relay's handler is: no await between the publishes.
        let full = try await withCheckedThrowingContinuation { (c: CheckedContinuation<[Bool], any Error>) in
            Task(executorPreference: relay.executor) {
                do {
                    var full: [Bool] = []
                    full.append(try Array("a".utf8).withUnsafeBytes { try relay.publishWithoutWaiting("relay.one", bytes: $0) })
                    full.append(try Array("b".utf8).withUnsafeBytes { try relay.publishWithoutWaiting("relay.two", bytes: $0, properties: props) })
                    full.append(try Array("relay.three".utf8).withUnsafeBytes { t in
                        try Array("c".utf8).withUnsafeBytes { payload in
                            try block.withUnsafeBytes { try relay.publishWithoutWaiting(topic: t, payload: payload, encodedProperties: $0) }
                        }
                    })
                    c.resume(returning: full)
                } catch { c.resume(throwing: error) }
            }
        }
        #expect(full == [false, false, false])
        var got: [Event] = []
        for try await e in events {
            got.append(e)
            if got.count == 3 { break }
        }
        #expect(got.map(\.text) == ["a", "b", "c"] && got.map(\.topic) == ["relay.one", "relay.two", "relay.three"])
        #expect(got[0].properties == MessageProperties() && got[1].properties == p && got[2].properties == p)
        await relay.close()
        await subscriber.close()
    }

    @Test func badTopicsAndMalformedBlocksAreRefusedAndNothingIsSent() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let subscriber = try await Peer.connect(to: broker.socketPath, name: "sub")
        let events = try await subscriber.subscribe("#")
        let relay = try await Peer.connect(to: broker.socketPath, name: "relay")
        func refused(_ topic: String, _ block: [UInt8]) -> EvbusError? {
            do {
                _ = try Array(topic.utf8).withUnsafeBytes { t in
                    try block.withUnsafeBytes { try relay.publishWithoutWaiting(topic: t, payload: UnsafeRawBufferPointer(start: nil, count: 0), encodedProperties: $0) }
                }
                return nil
            } catch { return error as? EvbusError }
        }
        var p = MessageProperties()
        p.messageID = "id"
        var good = p.encoded()
        #expect(refused("a..b", [0])?.code == .invalidArgument)
        #expect(refused("ok", [])?.code == .invalidArgument, "no block at all")
        #expect(refused("ok", Array(good.dropLast()))?.code == .invalidArgument, "cut short")
        #expect(refused("ok", good + [0])?.code == .invalidArgument, "bytes after the block")
        good[good.count - 1] = 0xFF  // the id's last byte: not UTF-8
        #expect(refused("ok", good)?.code == .invalidArgument, "not UTF-8")
        #expect(throws: EvbusError.self) { _ = try Array("x".utf8).withUnsafeBytes { try relay.publishWithoutWaiting("bad topic #", bytes: $0) } }
        // The connection is intact: the next good publish is the first thing delivered.
        try await relay.publish("after", "fine")
        var first: Event?
        for try await e in events { first = e; break }
        #expect(first?.topic == "after" && first?.text == "fine")
        await relay.close()
        await subscriber.close()
    }

    /// Publishing without waiting into a broker that stops reading: `true` once the outbox is
    /// past its high watermark, and `waitForRoom()` returns once it drained.
    @Test func aFullOutboxIsReportedAndWaitForRoomReturnsOnceItDrained() async throws {
        let broker = try await BrokerProcess()
        let relay = try await Peer.connect(to: broker.socketPath, name: "relay")
        let subscriber = try await Peer.connect(to: broker.socketPath, name: "sub")
        let got = Collector<Int>()
        _ = try await subscriber.subscribeViews("bulk") { _ in got.add(1) }
        broker.process.signal(SIGSTOP)
        let frame = [UInt8](repeating: 7, count: 64 << 10)
        var sent = 0, full = false
        while !full && sent < 1_000 {  // 64 MiB at most; the outbox's high watermark is 4 MiB
            full = try frame.withUnsafeBytes { try relay.publishWithoutWaiting("bulk", bytes: $0) }
            sent += 1
        }
        #expect(full && sent < 200, "full after \(sent) frames")
        broker.process.signal(SIGCONT)
        try await relay.waitForRoom()
        #expect(await eventually(30) { got.count == sent })
        await relay.close()
        await subscriber.close()
    }
}
