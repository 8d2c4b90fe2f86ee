import Evbus
import EvbusIO
import EvbusTestSupport
import Foundation
import Synchronization
import Testing

/// Collects events from a handler for assertions.
final class Collected: Sendable {
    let events = Mutex<[Event]>([])
    func add(_ e: Event) { events.withLock { $0.append(e) } }
    var texts: [String] { events.withLock { $0.map(\.text) } }
    var count: Int { events.withLock { $0.count } }
}

@Suite struct PeerTests {
    @Test func publishAndIterateMatchingEvents() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let (sub, pub) = try await broker.connect("sub", "pub")
        let temps = try await sub.subscribe("sensors.*.temp")
        try await pub.publish("sensors.kitchen.temp", "21.5")
        try await pub.publish("sensors.kitchen.humidity", "40")  // does not match
        try await pub.publish("sensors.hall.temp", Array("19.0".utf8))
        let events = try await take(2, from: temps)
        #expect(events.map(\.topic) == ["sensors.kitchen.temp", "sensors.hall.temp"])
        #expect(events.map(\.text) == ["21.5", "19.0"])
        #expect(events.allSatisfy { $0.publisher == pub.connectionID })
        await pub.close()
        await sub.close()
    }

    @Test func messagePropertiesTravelUnchanged() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let peer = try await broker.connect()
        let properties = MessageProperties(
            contentType: "application/json", correlationID: "abc", replyTo: "replies.me", messageID: "m-9",
            timestamp: 1_700_000_000_123, headers: ["trace": "t-1", "priority": "high"])
        let asEvents = try await peer.subscribe("props.#")
        let viewed = Collected()
        _ = try await peer.subscribeViews("props.#") { viewed.add($0.event()) }
        try await peer.publish("props.a", "{}", properties: properties)
        try await peer.publish("props.b", "plain")
        let events = try await take(2, from: asEvents)
        #expect(events.map(\.properties) == [properties, .none])
        #expect(await eventually { viewed.count == 2 })
        #expect(viewed.events.withLock { $0.map(\.properties) } == [properties, .none])
        await peer.close()
    }

    @Test func handlerAndViewFormsReceiveEveryEventInOrder() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let peer = try await broker.connect()
        let byHandler = Collected()
        let byView = Collected()
        _ = try await peer.subscribe("log.#") { byHandler.add($0) }
        _ = try await peer.subscribeViews("log.#") { byView.add($0.event()) }
        for i in 0..<100 { try await peer.publish("log.app", "\(i)") }
        try await peer.flush()
        #expect(await eventually { byHandler.count == 100 && byView.count == 100 })
        #expect(byHandler.texts == (0..<100).map(String.init))
        #expect(byView.texts == byHandler.texts)
        await peer.close()
    }

    @Test func overlappingSubscriptionsEachGetACopy() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let (a, b) = try await broker.connect("a", "b")
        let aAll = try await a.subscribe("logs.#")
        let aErrors = try await a.subscribe("logs.*.error")
        let bErrors = try await b.subscribe("#.error")
        try await b.publish("logs.db.error", "disk full")
        #expect(try await take(1, from: aAll).map(\.text) == ["disk full"])
        #expect(try await take(1, from: aErrors).map(\.text) == ["disk full"])
        #expect(try await take(1, from: bErrors).map(\.text) == ["disk full"])
        await a.close()
        await b.close()
    }

    @Test func oneSubscriptionWithSeveralPatterns() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let peer = try await broker.connect()
        let s = try await peer.subscribe("a.*", "b.#")
        #expect(s.ids.count == 2)
        try await peer.publish("a.x", "1")
        try await peer.publish("c", "no")
        try await peer.publish("b.y.z", "2")
        #expect(try await take(2, from: s).map(\.text) == ["1", "2"])
        await peer.close()
    }

    @Test func unsubscribeEndsIterationAndStopsDeliveries() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let peer = try await broker.connect()
        let s = try await peer.subscribe("t")
        try await peer.publish("t", "one")
        #expect(try await take(1, from: s).map(\.text) == ["one"])
        try await s.cancel()
        try await peer.publish("t", "two")
        try await peer.flush()
        var rest: [Event] = []
        for try await e in s { rest.append(e) }  // ends: no hang
        #expect(rest.isEmpty)
        #expect(broker.stat("subscriptions") == 0)
        await peer.close()
    }

    @Test func tenThousandMessagesArriveInPublishOrder() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let sub = try await broker.connect()
        let pub = try await broker.connect()
        let s = try await sub.subscribe("seq")
        let publishing = Task { for i in 0..<10_000 { try await pub.publish("seq", "\(i)") } }
        let events = try await take(10_000, from: s)
        try await publishing.value
        #expect(events.map(\.text) == (0..<10_000).map(String.init))
        await pub.close()
        await sub.close()
    }

    @Test func aSlowAsyncConsumerLosesNothing() async throws {
        // A tiny buffer forces the peer to stop reading from the broker and resume, many times.
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        var options = Peer.Options()
        options.subscriptionBuffer = 8
        let sub = try await Peer.connect(to: broker.socketPath, options: options)
        let pub = try await broker.connect()
        let s = try await sub.subscribe("slow")
        for i in 0..<2000 { try await pub.publish("slow", "\(i)") }
        try await pub.flush()
        var seen: [String] = []
        for try await e in s {
            seen.append(e.text)
            if seen.count % 100 == 0 { try await Task.sleep(nanoseconds: 1_000_000) }
            if seen.count == 2000 { break }
        }
        #expect(seen == (0..<2000).map(String.init))
        await pub.close()
        await sub.close()
    }

    @Test func closeSendsEverythingPublishedBeforeIt() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let sub = try await broker.connect()
        let s = try await sub.subscribe("last")
        let pub = try await broker.connect()
        for i in 0..<500 { try await pub.publish("last", "\(i)") }
        await pub.close()  // no flush: close itself must not drop the tail
        #expect(try await take(500, from: s).count == 500)
        await sub.close()
        var after: [Event] = []
        for try await e in s { after.append(e) }  // a closed peer's iteration ends normally
        #expect(after.isEmpty)
        await #expect(throws: EvbusError.self) { try await pub.publish("last", "x") }
    }

    @Test func manyTasksPublishingOnOnePeer() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let peer = try await broker.connect()
        let got = Collected()
        _ = try await peer.subscribe("par.#") { got.add($0) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for t in 0..<8 {
                group.addTask { for i in 0..<500 { try await peer.publish("par.\(t)", "\(i)") } }
            }
            try await group.waitForAll()
        }
        try await peer.flush()
        #expect(await eventually { got.count == 4000 })
        // Per publishing task, order is kept.
        for t in 0..<8 {
            let mine = got.events.withLock { $0.filter { $0.topic == "par.\(t)" }.map(\.text) }
            #expect(mine == (0..<500).map(String.init))
        }
        await peer.close()
    }

    @Test func brokerStatsCountTraffic() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let peer = try await broker.connect()
        _ = try await peer.subscribe("s") { _ in }
        try await peer.publish("s", "x")
        try await peer.publish("nobody.listens", "y")
        try await peer.flush()
        let stats = Dictionary(uniqueKeysWithValues: try await peer.brokerStats().map { ($0.name, $0.value) })
        #expect(stats["published"] == 2)
        #expect(stats["delivered"] == 1)
        #expect(stats["unroutable"] == 1)
        #expect(stats["subscriptions"] == 1)
        await peer.close()
    }
}

@Suite struct PeerErrorTests {
    @Test func noBrokerMeansCannotConnectNamingThePath() async {
        let path = TestPaths.socket("none")
        do {
            _ = try await Peer.connect(to: path)
            Issue.record("connected to nothing")
        } catch let error as EvbusError {
            #expect(error.code == .cannotConnect)
            #expect(error.message.contains(path))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func badTopicsAndPatternsAreRefusedBeforeSending() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let peer = try await broker.connect()
        for topic in ["", "a..b", "a.*", "a b"] {
            await #expect {
                try await peer.publish(topic, "x")
            } throws: { ($0 as? EvbusError)?.wireCode == .invalidTopic }
        }
        await #expect {
            _ = try await peer.subscribe("a.b#")
        } throws: { ($0 as? EvbusError)?.wireCode == .invalidPattern }
        // The connection is fine afterwards.
        try await peer.flush()
        #expect(broker.stat("protocol_errors") == 0)
        await peer.close()
    }

    @Test func payloadOverTheFrameLimitIsRefusedLocally() async throws {
        let broker = try InProcessBroker { $0.maxFrameBytes = 4096 }
        defer { broker.shutdown() }
        let peer = try await broker.connect()
        #expect(peer.maxFrameBytes == 4096)
        await #expect {
            try await peer.publish("big", [UInt8](repeating: 0, count: 5000))
        } throws: { ($0 as? EvbusError)?.wireCode == .frameTooLarge }
        try await peer.publish("small", [UInt8](repeating: 0, count: 4000))
        try await peer.flush()
        await peer.close()
    }

    /// Properties a wire string cannot hold whole are refused with the reason, by every way of
    /// sending them, instead of being cut; nothing is sent and the connection goes on.
    @Test func propertiesTooBigForTheWireAreRefusedNotCut() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let subscriber = try await broker.connect()
        let events = try await subscriber.subscribe("#")
        let peer = try await broker.connect()
        let long = String(repeating: "x", count: 65_536)
        var manyHeaders: [String: String] = [:]
        for i in 0...MessageProperties.maxHeaders { manyHeaders["h\(i)"] = "v" }
        func isRefusal(_ error: any Error, saying words: String) -> Bool {
            guard let e = error as? EvbusError, e.code == .invalidArgument else { return false }
            return e.message.contains(words)
        }
        for p in [MessageProperties(correlationID: long), MessageProperties(headers: ["big": long]), MessageProperties(headers: [long: "v"]),
                  MessageProperties(headers: manyHeaders)] {
            let words = p.headers.count > 1 ? "at most 1024" : "65536 bytes"
            await #expect { try await peer.publish("t", Array("x".utf8), properties: p) } throws: { isRefusal($0, saying: words) }
            await #expect { try await peer.publish(to: "amq.topic", key: "t", "x", properties: p) } throws: { isRefusal($0, saying: words) }
            #expect { _ = try [1].withUnsafeBytes { try peer.publishWithoutWaiting("t", bytes: $0, properties: p) } } throws: { isRefusal($0, saying: words) }
        }
        await #expect { _ = try await peer.request(to: .queue("q"), "x", headers: ["big": long]) } throws: { isRefusal($0, saying: "header \"big\" is 65536 bytes") }
        // 65,535 bytes fit: that one travels whole, and is the first thing delivered.
        let fits = String(repeating: "y", count: 65_535)
        try await peer.publish("after", Array("ok".utf8), properties: MessageProperties(messageID: fits))
        var first: Event?
        for try await e in events { first = e; break }
        #expect(first?.topic == "after" && first?.properties.messageID == fits)
        #expect(broker.stat("protocol_errors") == 0)
        await peer.close()
        await subscriber.close()
    }

    @Test func aBrokerThatGoesAwayFailsPendingWorkWithConnectionLost() async throws {
        let broker = try InProcessBroker()
        var once = Peer.Options()
        once.reconnect = .never  // (a reconnecting peer's iterations carry on: ReconnectTests)
        let peer = try await broker.connect(options: once)
        let s = try await peer.subscribe("x")
        broker.shutdown()
        await #expect {
            for try await _ in s {}
        } throws: { ($0 as? EvbusError)?.code == .connectionLost }
        await #expect {
            try await peer.flush()
        } throws: { ($0 as? EvbusError)?.code == .connectionLost }
    }

    @Test func breakingOutOfAConsumerLoopCancelsItAndReturnsWhatItHeld() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let peer = try await broker.connect("worker")
        _ = try await peer.declareQueue("hello")
        for i in 1...3 { try await peer.publish(to: "", key: "hello", "m\(i)") }
        try await peer.flush()
        for try await delivery in try await peer.consume("hello", ack: .manual, prefetch: 2) {
            #expect(delivery.text == "m1")
            break  // never acknowledged, and nothing reads the second one it was sent
        }
        // The consumer is gone and both messages it held are back, flagged redelivered.
        #expect(await eventually {
            let q = try? await peer.topology().queues.first { $0.name == "hello" }
            return q?.consumers == 0 && q?.unacked == 0 && q?.ready == 3
        })
        let next = try await peer.consume("hello", ack: .auto)
        var it = next.makeAsyncIterator()
        let first = try #require(try await it.next())
        #expect(first.text == "m1" && first.redelivered)
        // A handler consumer dropped by its caller keeps running until cancelled.
        let seen = Collector<String>()
        _ = try await peer.consume("hello", ack: .auto) { seen.add($0.text) }
        try await next.cancel()
        try await peer.publish(to: "", key: "hello", "m4")
        #expect(await eventually { seen.items.contains("m4") })
        await peer.close()
    }
}
