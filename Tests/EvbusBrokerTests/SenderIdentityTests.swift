import EvbusBroker
import EvbusTestSupport
import EvbusWire
import Testing

/// SENDER frames (PROTOCOL.md §5.15): who published, as the kernel said, once per publisher and
/// receiver, before its first delivery; for queue messages even after the publisher has gone.
@Suite struct SenderIdentityTests {
    let alice = PeerIdentity(uid: 1001, gid: 100, pid: 11)
    let bob = PeerIdentity(uid: 1002, gid: 100, pid: 12)

    func frames(_ b: MemoryBroker, _ s: ConnectionState) throws -> [Frame] {
        var out: [Frame] = []
        while let f = try b.nextFrame(for: s) { out.append(f) }
        return out
    }

    @Test func eachPublisherIsAnnouncedOnceBeforeItsFirstDelivery() throws {
        let b = MemoryBroker()
        let sub = b.connect(senders: true)
        let plain = b.connect()
        let a = b.connect(alice, name: "root")  // a name is only a name: the uid is the kernel's
        let c = b.connect(bob, name: "bob")
        b.send([.subscribe(subscriptionID: 1, pattern: "#")], from: sub)
        b.send([.subscribe(subscriptionID: 1, pattern: "#")], from: plain)
        _ = try frames(b, sub)
        _ = try frames(b, plain)
        b.send([.publish(topic: "t", payload: [1]), .publish(topic: "t", payload: [2])], from: a)
        b.send([.publish(topic: "t", payload: [3])], from: c)
        b.send([.publish(topic: "t", payload: [4])], from: a)
        let got = try frames(b, sub)
        #expect(got == [
            .sender(publisher: a.id, uid: 1001, gid: 100, pid: 11, name: "root", flags: 0),
            .deliver(subscriptionID: 1, publisher: a.id, topic: "t", payload: [1]),
            .deliver(subscriptionID: 1, publisher: a.id, topic: "t", payload: [2]),
            .sender(publisher: c.id, uid: 1002, gid: 100, pid: 12, name: "bob", flags: 0),
            .deliver(subscriptionID: 1, publisher: c.id, topic: "t", payload: [3]),
            .deliver(subscriptionID: 1, publisher: a.id, topic: "t", payload: [4]),
        ])
        #expect(try frames(b, plain).allSatisfy { if case .deliver = $0 { true } else { false } }, "no SENDER unless asked for")
    }

    @Test func aQueuedMessageNamesItsSenderAfterThePublisherHasGone() throws {
        let b = MemoryBroker()
        let admin = b.connect()
        b.send([.declareQueue(requestID: 1, name: "jobs")], from: admin)
        _ = try frames(b, admin)
        let a = b.connect(alice, name: "producer")
        b.send([.publishTo(flags: 0, exchange: "", routingKey: "jobs", payload: [7])], from: a)
        b.disconnect(a)
        let consumer = b.connect(senders: true)
        b.send([.consume(consumerID: 2, queue: "jobs", flags: 0, prefetch: 0)], from: consumer)
        let got = try frames(b, consumer)
        #expect(got.count == 3, "\(got)")
        #expect(got.dropFirst().first == .sender(publisher: a.id, uid: 1001, gid: 100, pid: 11, name: "producer", flags: 0))
        guard case .message(2, _, _, a.id, "", "jobs", _, [7])? = got.last else { return #expect(Bool(false), "\(got)") }
    }

    @Test func pastItsLimitTheBrokerTellsTheClientToForgetAndStartsOver() throws {
        let b = MemoryBroker()
        let sub = b.connect(senders: true)
        b.send([.subscribe(subscriptionID: 1, pattern: "#")], from: sub)
        _ = try frames(b, sub)
        let limit = BrokerCore<MemoryBroker>.announcedLimit
        var publishers: [ConnectionState] = []
        for i in 0...limit {
            let p = b.connect(PeerIdentity(uid: UInt32(2000 + i), gid: 1, pid: 1))
            publishers.append(p)
            b.send([.publish(topic: "t", payload: [])], from: p)
        }
        let senders = try frames(b, sub).compactMap { f -> (UInt64, UInt8)? in
            if case .sender(let id, _, _, _, _, let flags) = f { return (id, flags) }
            return nil
        }
        #expect(senders.count == limit + 1)
        #expect(senders.prefix(limit).allSatisfy { $0.1 == 0 })
        #expect(senders.last?.1 == SenderFlag.forgetEarlier && senders.last?.0 == publishers.last?.id)
        // The first publisher, forgotten by both sides, is announced again before its next delivery.
        b.send([.publish(topic: "t", payload: [])], from: publishers[0])
        guard case .sender(publishers[0].id, 2000, _, _, _, 0)? = try frames(b, sub).first else { return #expect(Bool(false)) }
    }
}
