@testable import EvbusBroker
import EvbusWire
import Testing

/// Exchanges, queues, consumers and the unacked ledger with the routing core alone: no sockets.
@Suite struct RoutingTableTests {
    func slots(_ t: Topology, _ exchange: String, _ key: String) throws -> Set<String> {
        let targets = try Array(key.utf8).withUnsafeBytes { k in try t.exchange(exchange).route(k) }
        #expect(targets.allSatisfy { $0.isQueue })
        #expect(targets.count == Set(targets).count, "a queue appears once per message")
        return Set(targets.compactMap { t.queues[Int($0.queueSlot)]?.name })
    }

    func topology(queues: [String]) throws -> Topology {
        let t = Topology()
        for q in queues { _ = try t.declareQueue(q, options: QueueOptions(), connection: 1) }
        return t
    }

    @Test func theDefaultExchangeRoutesByQueueName() throws {
        let t = try topology(queues: ["a", "b"])
        #expect(try slots(t, "", "a") == ["a"])
        #expect(try slots(t, "", "c") == [])
        t.remove(try t.queue("a", connection: 1))
        #expect(try slots(t, "", "a") == [])
    }

    @Test func fanoutIgnoresTheKey() throws {
        let t = try topology(queues: ["a", "b", "c"])
        try t.declareExchange("f", kind: .fanout)
        try t.bind(queue: "a", exchange: "f", key: "", connection: 1)
        try t.bind(queue: "b", exchange: "f", key: "whatever", connection: 1)
        try t.bind(queue: "b", exchange: "f", key: "other", connection: 1)
        #expect(try slots(t, "f", "anything") == ["a", "b"])
        try t.unbind(queue: "b", exchange: "f", key: "whatever", connection: 1)
        #expect(try slots(t, "f", "x") == ["a", "b"], "still bound by its other key")
        try t.unbind(queue: "b", exchange: "f", key: "other", connection: 1)
        #expect(try slots(t, "f", "x") == ["a"])
    }

    @Test func directMatchesTheKeyExactly() throws {
        let t = try topology(queues: ["errors", "all"])
        try t.declareExchange("d", kind: .direct)
        for key in ["info", "warning", "error"] { try t.bind(queue: "all", exchange: "d", key: key, connection: 1) }
        try t.bind(queue: "errors", exchange: "d", key: "error", connection: 1)
        #expect(try slots(t, "d", "error") == ["errors", "all"])
        #expect(try slots(t, "d", "info") == ["all"])
        #expect(try slots(t, "d", "err") == [])
        try t.bind(queue: "errors", exchange: "d", key: "error", connection: 1)  // twice: a no-op
        t.remove(try t.queue("errors", connection: 1))
        #expect(try slots(t, "d", "error") == ["all"])
        #expect(try t.exchange("d").bindings.count == 3)
    }

    @Test func topicMatchesPatternsAndDeliversOncePerQueue() throws {
        let t = try topology(queues: ["q1", "q2"])
        try t.declareExchange("t", kind: .topic)
        try t.bind(queue: "q1", exchange: "t", key: "*.orange.*", connection: 1)
        try t.bind(queue: "q2", exchange: "t", key: "*.*.rabbit", connection: 1)
        try t.bind(queue: "q2", exchange: "t", key: "lazy.#", connection: 1)
        #expect(try slots(t, "t", "quick.orange.rabbit") == ["q1", "q2"])
        #expect(try slots(t, "t", "lazy.pink.rabbit") == ["q2"])
        #expect(try slots(t, "t", "quick.brown.fox") == [])
        #expect(try slots(t, "t", "lazy") == ["q2"])
        #expect(throws: WireError.self) { try t.bind(queue: "q1", exchange: "t", key: "a.#x", connection: 1) }
        #expect(throws: WireError.self) { _ = try slots(t, "t", "bad..key") }
    }

    @Test func deletingAnExchangeRemovesItsBindingsFromQueues() throws {
        let t = try topology(queues: ["q"])
        try t.declareExchange("x", kind: .direct)
        try t.bind(queue: "q", exchange: "x", key: "k", connection: 1)
        #expect(throws: WireError.self) { try t.deleteExchange("x", ifUnused: true) }
        try t.deleteExchange("x")
        #expect(try t.queue("q", connection: 1).bindings.isEmpty)
        #expect(throws: WireError.self) { try t.exchange("x") }
    }

    @Test func consumersShareRoundRobinWithinTheirPrefetch() throws {
        let q = MessageQueue(name: "q", slot: 0, options: QueueOptions(), owner: nil)
        let a = ConsumerRecord(connectionSlot: 0, connectionID: 1, id: 1, manualAck: true, prefetch: 1, queue: q)
        let b = ConsumerRecord(connectionSlot: 1, connectionID: 2, id: 1, manualAck: true, prefetch: 2, queue: q)
        q.add(a)
        q.add(b)
        var dropped: [StoredMessage] = []
        for i in 0..<5 { #expect(q.enqueue(message("\(i)"), dropped: &dropped)) }
        var order: [UInt64] = []
        while case .deliver(_, let c) = q.next(now: 0) { order.append(c.connectionID) }
        #expect(order == [1, 2, 2], "a holds 1, b holds 2; the rest waits")
        #expect(q.readyCount == 2 && q.unacked == 3)
        q.settled(a, acked: true)
        guard case .deliver(_, let next) = q.next(now: 0) else { Issue.record("expected a delivery"); return }
        #expect(next === a)
    }

    @Test func limitsDropTheHeadOrRejectTheNewcomer() {
        var dropped: [StoredMessage] = []
        let head = MessageQueue(name: "h", slot: 0, options: QueueOptions(maxLength: 2), owner: nil)
        for i in 0..<4 { #expect(head.enqueue(message("\(i)"), dropped: &dropped)) }
        #expect(dropped.map(text) == ["0", "1"] && head.readyCount == 2)
        dropped.removeAll()
        let reject = MessageQueue(name: "r", slot: 1, options: QueueOptions(maxBytes: 3, overflow: .rejectPublish), owner: nil)
        #expect(reject.enqueue(message("ab"), dropped: &dropped))
        #expect(!reject.enqueue(message("cd"), dropped: &dropped))
        #expect(reject.enqueue(message("e"), dropped: &dropped))
        #expect(reject.readyCount == 2 && reject.readyBytes == 3 && dropped.isEmpty)
    }

    @Test func expiredHeadsLeaveBeforeAnyDelivery() {
        let q = MessageQueue(name: "q", slot: 0, options: QueueOptions(), owner: nil)
        var dropped: [StoredMessage] = []
        var old = message("old")
        old.expiresAt = 100
        _ = q.enqueue(old, dropped: &dropped)
        _ = q.enqueue(message("new"), dropped: &dropped)
        guard case .expired(let m) = q.next(now: 101) else { Issue.record("expected the head to expire"); return }
        #expect(text(m) == "old")
        guard case .idle = q.next(now: 101) else { Issue.record("no consumer: idle"); return }
    }

    @Test func theLedgerSettlesSingleAndMultipleAndRefusesTheRest() throws {
        let q = MessageQueue(name: "q", slot: 0, options: QueueOptions(), owner: nil)
        let c = ConsumerRecord(connectionSlot: 0, connectionID: 1, id: 1, manualAck: true, prefetch: 0, queue: q)
        var ledger = UnackedLedger()
        let tags = (0..<5).map { ledger.record(message("\($0)"), consumer: c) }
        #expect(tags == [1, 2, 3, 4, 5])
        var settled: [String] = []
        settled.append(text(try ledger.settle(3).0))
        #expect(throws: WireError.self) { try ledger.settle(3) }
        #expect(throws: WireError.self) { try ledger.settle(9) }
        #expect(throws: WireError.self) { try ledger.settle(0) }
        var upTo4: [UnackedLedger.Settled] = []
        try ledger.settleUpTo(4, into: &upTo4)
        settled += upTo4.map { text($0.message) }
        #expect(settled == ["2", "0", "1", "3"])
        let rest = ledger.takeAll(of: c).map { text($0.message) }
        #expect(rest == ["4"] && ledger.outstanding == 0)
        var none: [UnackedLedger.Settled] = []
        #expect(throws: WireError.self) { try ledger.settleUpTo(0, into: &none) }
    }

    @Test func exclusiveQueuesAndConflictingDeclarations() throws {
        let t = Topology()
        let q = try t.declareQueue("", options: QueueOptions(exclusive: true), connection: 7)
        #expect(q.name.hasPrefix("amq.gen-7-"))
        #expect(throws: WireError(.queueLocked, "queue \"\(q.name)\" is exclusive to another connection")) {
            _ = try t.queue(q.name, connection: 8)
        }
        _ = try t.declareQueue("q", options: QueueOptions(maxLength: 1), connection: 1)
        #expect(throws: WireError.self) { _ = try t.declareQueue("q", options: QueueOptions(), connection: 1) }
        #expect(try t.declareQueue("q", options: QueueOptions(), passive: true, connection: 1).name == "q")
        #expect(throws: WireError.self) { try t.declareExchange("amq.x", kind: .topic) }
    }

    func message(_ text: String) -> StoredMessage {
        let empty: [UInt8] = []
        let none: [UInt8] = [0]
        let payload = Array(text.utf8)
        return empty.withUnsafeBytes { e in
            none.withUnsafeBytes { p in
                payload.withUnsafeBytes { b in
                    StoredMessage(publisher: 1, exchange: e, routingKey: e, properties: p, payload: b, expiresAt: 0)
                }
            }
        }
    }

    func text(_ m: StoredMessage) -> String { String(decoding: m.parts().payload, as: UTF8.self) }
}

@Suite struct SubscriptionsTests {
    @Test func holdsNoneOneOrManyLikeADictionary() {
        var subs = Subscriptions()
        #expect(subs.count == 0 && !subs.contains(1) && subs.pattern(of: 1) == nil)
        subs.insert(1, pattern: "a.#")
        #expect(subs.count == 1 && subs.pattern(of: 1) == "a.#" && subs.map(\.id) == [1])
        subs.insert(2, pattern: "b")
        subs.insert(3, pattern: "c.*")
        #expect(subs.count == 3 && Set(subs.map(\.pattern)) == ["a.#", "b", "c.*"])
        #expect(subs.remove(2) == "b" && subs.remove(2) == nil)
        #expect(subs.count == 2 && !subs.contains(2))
        #expect(subs.remove(1) == "a.#" && subs.remove(3) == "c.*")
        #expect(subs.count == 0 && Array(subs).isEmpty)
        subs.insert(4, pattern: "d")
        #expect(subs.remove(5) == nil && subs.count == 1)
        subs.removeAll()
        #expect(subs.count == 0)
    }
}
