import EvbusBroker
import EvbusTestSupport
import EvbusWire
import Testing

/// The broker's rules, each run twice from one body: against the core in memory (its clock moved
/// by hand, no sockets) and against a live broker over a real socket.
@Suite struct BrokerRuleTests {
    typealias Client = RuleBroker.Client

    func declare(_ c: Client, _ queue: String, _ options: QueueOptions = QueueOptions()) throws {
        c.send(.declareQueue(requestID: 1, name: queue, options: options))
        guard case .queueOK = try c.next() else { throw TestSupportError("declare \(queue) failed") }
    }

    func consume(_ c: Client, _ queue: String, id: UInt32 = 7, manualAck: Bool = false, prefetch: UInt16 = 0) throws {
        c.send(.consume(consumerID: id, queue: queue, flags: manualAck ? ConsumeFlag.manualAck : 0, prefetch: prefetch))
        guard case .ok(id) = try c.next() else { throw TestSupportError("consume \(queue) failed") }
    }

    func put(_ c: Client, _ queue: String, _ text: String, flags: UInt8 = 0, properties: MessageProperties = .none) {
        c.send(.publishTo(flags: flags, exchange: "", routingKey: queue, properties: properties, payload: Array(text.utf8)))
    }

    /// The payloads (as text) and tags of the MESSAGE frames among `frames`.
    func messages(_ frames: [Frame]) -> [(text: String, tag: UInt64, redelivered: Bool, properties: MessageProperties)] {
        frames.compactMap {
            guard case .message(_, let tag, let flags, _, _, _, let properties, let payload) = $0 else { return nil }
            return (String(decoding: payload, as: UTF8.self), tag, flags & AckFlag.redelivered != 0, properties)
        }
    }

    @Test(arguments: RuleTarget.allCases)
    func competingConsumersShareAQueueRoundRobin(_ target: RuleTarget) throws {
        let broker = try RuleBroker(target)
        let a = try broker.connect(), b = try broker.connect(), producer = try broker.connect()
        try declare(a, "work")
        try consume(a, "work")
        try consume(b, "work")
        for i in 1...4 { put(producer, "work", "m\(i)") }
        _ = try producer.drain()
        #expect(messages(try a.drain()).map(\.text) == ["m1", "m3"])
        #expect(messages(try b.drain()).map(\.text) == ["m2", "m4"])
    }

    @Test(arguments: RuleTarget.allCases)
    func prefetchLimitsWhatIsUnacknowledgedAndAnAckMakesRoom(_ target: RuleTarget) throws {
        let broker = try RuleBroker(target)
        let worker = try broker.connect(), producer = try broker.connect()
        try declare(worker, "tasks")
        try consume(worker, "tasks", manualAck: true, prefetch: 2)
        for i in 1...5 { put(producer, "tasks", "t\(i)") }
        _ = try producer.drain()
        let first = messages(try worker.drain())
        #expect(first.map(\.text) == ["t1", "t2"])
        worker.send(.ack(deliveryTag: first[0].tag, flags: 0))
        #expect(messages(try worker.drain()).map(\.text) == ["t3"])
        // Acknowledging every outstanding tag at once (multiple, tag 0) makes room for two more.
        worker.send(.ack(deliveryTag: 0, flags: AckFlag.multiple))
        #expect(messages(try worker.drain()).map(\.text) == ["t4", "t5"])
        #expect(broker.stat("acked") == 3)
        // An unknown tag is refused; the connection stays open.
        worker.send(.ack(deliveryTag: 99, flags: 0))
        let refusal = try worker.drain()
        guard case .error(.unknownDeliveryTag, 0, _) = refusal.first else { Issue.record("expected unknown-delivery-tag, got \(refusal)"); return }
    }

    @Test(arguments: RuleTarget.allCases)
    func unacknowledgedMessagesOfAConsumerThatGoesAreRedelivered(_ target: RuleTarget) async throws {
        let broker = try RuleBroker(target)
        let first = try broker.connect(), second = try broker.connect(), producer = try broker.connect()
        try declare(first, "jobs")
        try consume(first, "jobs", manualAck: true)
        put(producer, "jobs", "j1")
        put(producer, "jobs", "j2")
        _ = try producer.drain()
        let got = messages(try first.drain())
        #expect(got.map(\.text) == ["j1", "j2"] && got.allSatisfy { !$0.redelivered })
        try consume(second, "jobs", manualAck: true)
        try await broker.disconnect(first)
        let again = messages(try second.drain())
        #expect(again.map(\.text) == ["j1", "j2"], "in their original order")
        #expect(again.allSatisfy { $0.redelivered })
    }

    @Test(arguments: RuleTarget.allCases)
    func aNackRequeuesOrDeadLettersWithTheReason(_ target: RuleTarget) throws {
        let broker = try RuleBroker(target)
        let worker = try broker.connect(), graveyard = try broker.connect()
        worker.send(.declareExchange(requestID: 2, name: "dlx", kind: .fanout))
        _ = try worker.next()
        try declare(graveyard, "dead")
        graveyard.send(.bind(requestID: 3, queue: "dead", exchange: "dlx", key: ""))
        _ = try graveyard.next()
        try consume(graveyard, "dead")
        var options = QueueOptions()
        options.deadLetterExchange = "dlx"
        try declare(worker, "in", options)
        try consume(worker, "in", manualAck: true)
        put(worker, "in", "once")
        let delivered = messages(try worker.drain())
        worker.send(.nack(deliveryTag: delivered[0].tag, flags: AckFlag.requeue))
        let redelivered = messages(try worker.drain())
        #expect(redelivered.map(\.text) == ["once"] && redelivered[0].redelivered)
        worker.send(.nack(deliveryTag: redelivered[0].tag, flags: 0))
        _ = try worker.drain()
        let dead = messages(try graveyard.drain())
        #expect(dead.map(\.text) == ["once"])
        #expect(dead.first?.properties.headers["x-death-reason"] == "rejected")
        #expect(dead.first?.properties.headers["x-death-queue"] == "in")
        #expect(broker.stat("dead_lettered") == 1)
    }

    @Test(arguments: RuleTarget.allCases)
    func routingKeysOver255BytesAreRefusedOnEveryExchangeKind(_ target: RuleTarget) throws {
        let broker = try RuleBroker(target)
        let c = try broker.connect(), bystander = try broker.connect()
        try declare(bystander, "kept")
        try consume(bystander, "kept")
        for (exchange, size) in [("", 256), ("amq.direct", 256), ("amq.fanout", 1000), ("amq.topic", 256)] {
            c.send(.publishTo(
                flags: PublishFlag.mandatory | PublishFlag.confirm, exchange: exchange, routingKey: String(repeating: "k", count: size),
                properties: .none, payload: [1]))
            let frames = try c.drain()
            guard case .error(.invalidTopic, 0, let message)? = frames.first else {
                Issue.record("\(exchange): expected invalid-topic, got \(frames)")
                continue
            }
            #expect(message.contains("255"), "\(message)")
            #expect(!frames.contains { if case .returned = $0 { true } else { false } }, "refused, yet returned as unroutable")
            #expect(frames.contains { if case .confirm(_, AckFlag.nack) = $0 { true } else { false } }, "a confirmed publish must be nacked: \(frames)")
        }
        // The connection and everyone else carry on.
        put(c, "kept", "after")
        #expect(messages(try bystander.drain()).map(\.text) == ["after"])
    }

    @Test(arguments: RuleTarget.allCases)
    func aPublishToAnExchangeNameThatIsNotUTF8IsAMalformedFrame(_ target: RuleTarget) throws {
        let broker = try RuleBroker(target)
        let c = try broker.connect(), bystander = try broker.connect()
        // PUBLISH_TO: flags 0, exchange "\xFF\xFE", key "k", no properties, payload "x".
        let body: [UInt8] = [0x00, 0x02, 0x00, 0xFF, 0xFE, 0x01, 0x00, UInt8(ascii: "k"), 0x00, UInt8(ascii: "x")]
        c.send(bytes: withUnsafeBytes(of: UInt32(body.count + 1).littleEndian, Array.init) + [FrameType.publishTo.rawValue] + body)
        guard case .error(.malformedFrame, _, let message) = try c.next() else { throw TestSupportError("expected malformed-frame") }
        #expect(message.contains("UTF-8"))
        #expect(throws: (any Error).self) { _ = try c.drain() }  // closed
        #expect(broker.stat("protocol_errors") == 1)
        #expect(try bystander.drain().isEmpty)  // still served
    }

    @Test(arguments: RuleTarget.allCases)
    func builtInNamesAndPassiveDeclaresAnswerAsDocumented(_ target: RuleTarget) throws {
        let broker = try RuleBroker(target)
        let c = try broker.connect()
        func answer(_ frame: Frame) throws -> Frame {
            c.send(frame)
            return try c.next()
        }
        // Built-in exchanges declared as they are: OK, passive or not; as another kind: 209.
        for (name, kind) in [("", ExchangeKind.direct), ("amq.topic", .topic), ("amq.fanout", .fanout)] {
            for passive in [false, true] {
                guard case .ok = try answer(.declareExchange(requestID: 4, name: name, kind: kind, passive: passive)) else {
                    Issue.record("declaring \(name) as \(kind) (passive \(passive)) was refused")
                    continue
                }
            }
        }
        guard case .error(.preconditionFailed, 5, _) = try answer(.declareExchange(requestID: 5, name: "amq.topic", kind: .fanout)) else {
            throw TestSupportError("amq.topic as fanout")
        }
        guard case .error(.accessRefused, 6, _) = try answer(.declareExchange(requestID: 6, name: "amq.mine", kind: .fanout)) else {
            throw TestSupportError("a new amq. exchange")
        }
        // A passive queue declare checks only that it exists.
        try declare(c, "plain")
        guard case .queueOK(7, let info) = try answer(.declareQueue(requestID: 7, name: "plain", options: QueueOptions(maxLength: 5), passive: true)) else {
            throw TestSupportError("passive declare with other options")
        }
        #expect(info.name == "plain")
        guard case .error(.preconditionFailed, 8, _) = try answer(.declareQueue(requestID: 8, name: "plain", options: QueueOptions(maxLength: 5))) else {
            throw TestSupportError("a non-passive declare with other options must be refused")
        }
    }

    @Test(arguments: RuleTarget.allCases)
    func aReturnComesBeforeItsConfirmAndANackMultipleRequeuesInDeliveryOrder(_ target: RuleTarget) throws {
        let broker = try RuleBroker(target)
        let c = try broker.connect()
        c.send(.publishTo(flags: PublishFlag.mandatory | PublishFlag.confirm, exchange: "amq.direct", routingKey: "nobody",
                          properties: .none, payload: [1]))
        let frames = try c.drain()
        guard frames.count == 2, case .returned(.unroutable, _, _, _, _) = frames[0], case .confirm(1, _) = frames[1] else {
            throw TestSupportError("expected RETURN then CONFIRM, got \(frames)")
        }
        let worker = try broker.connect()
        try declare(c, "work")
        try consume(worker, "work", manualAck: true)
        for i in 1...4 { put(c, "work", "m\(i)") }
        _ = try c.drain()  // routed before the worker looks
        let first = messages(try worker.drain())
        #expect(first.map(\.text) == ["m1", "m2", "m3", "m4"])
        worker.send(.nack(deliveryTag: first[2].tag, flags: AckFlag.multiple | AckFlag.requeue))  // m1...m3 back
        let again = messages(try worker.drain())
        #expect(again.map(\.text) == ["m1", "m2", "m3"] && again.allSatisfy(\.redelivered))
    }

    /// Two queues dead-lettering into each other through "cyc" (qa's dead letters go to qb, qb's to qa).
    func deadLetterCycle(_ c: Client, ttl: UInt32?) throws {
        c.send(.declareExchange(requestID: 2, name: "cyc", kind: .direct))
        _ = try c.next()
        for (name, other) in [("qa", "qb"), ("qb", "qa")] {
            var options = QueueOptions()
            options.messageTTL = ttl
            options.deadLetterExchange = "cyc"
            options.deadLetterRoutingKey = other
            try declare(c, name, options)
            c.send(.bind(requestID: 3, queue: name, exchange: "cyc", key: name))
            _ = try c.next()
        }
    }

    @Test(arguments: RuleTarget.allCases)
    func aDeadLetterCycleThroughExpiryIsCutAfterEightHops(_ target: RuleTarget) async throws {
        let broker = try RuleBroker(target)
        let c = try broker.connect()
        try deadLetterCycle(c, ttl: 5)
        put(c, "qa", "bouncing")
        for _ in 0..<20 {
            try await broker.advance(by: .milliseconds(10))
            _ = try c.drain()
        }
        // Timers start each hop afresh, so only a count carried by the message can stop it.
        #expect(broker.stat("dead_lettered") == 8)
        #expect(broker.stat("dead_letter_cycles_cut") == 1)
        try await broker.advance(by: .milliseconds(100))
        #expect(broker.stat("dead_lettered") == 8, "still bouncing")
        c.send(.topology(requestID: 9))
        guard case .topologyReply(9, _, let queues) = try c.next() else { throw TestSupportError("no topology") }
        #expect(queues.filter { $0.name.hasPrefix("q") }.allSatisfy { $0.ready == 0 })
    }

    @Test(arguments: RuleTarget.allCases)
    func aDeadLetterCycleThroughNacksIsCutAndItsHeadersCountTheHops(_ target: RuleTarget) throws {
        let broker = try RuleBroker(target)
        let c = try broker.connect(), worker = try broker.connect()
        try deadLetterCycle(c, ttl: nil)
        try consume(worker, "qa", id: 1, manualAck: true)
        try consume(worker, "qb", id: 2, manualAck: true)
        put(c, "qa", "rejected")
        var seen: [MessageProperties] = []
        var quiet = 0
        for _ in 0..<40 {
            let got = messages(try worker.drain())
            if got.isEmpty {
                quiet += 1  // a live broker may not have routed it yet
                if quiet == 3 { break }
                continue
            }
            quiet = 0
            for m in got {
                seen.append(m.properties)
                worker.send(.nack(deliveryTag: m.tag, flags: 0))
            }
        }
        // Delivered once as published and once after each of the 8 hops; the 9th NACK discards it.
        #expect(seen.count == 9)
        #expect(seen.map { $0.headers["x-death-count"] } == [nil] + (1...8).map { String($0) })
        #expect(seen.dropFirst().allSatisfy { $0.headers["x-death-queue"] == "qa" && $0.headers["x-death-exchange"] == "" })
        #expect(seen.dropFirst().allSatisfy { $0.headers["x-death-routing-key"] == "qa" && $0.headers["x-death-reason"] == "rejected" })
        #expect(seen.last?.headers["x-last-death-queue"] == "qb")
        #expect(broker.stat("dead_letter_cycles_cut") == 1)
    }

    @Test(arguments: RuleTarget.allCases)
    func messagesExpireAfterTheirTTLIntoTheDeadLetterExchange(_ target: RuleTarget) async throws {
        let broker = try RuleBroker(target)
        let producer = try broker.connect(), graveyard = try broker.connect()
        producer.send(.declareExchange(requestID: 2, name: "expired", kind: .fanout))
        _ = try producer.next()
        try declare(graveyard, "late")
        graveyard.send(.bind(requestID: 3, queue: "late", exchange: "expired", key: ""))
        _ = try graveyard.next()
        try consume(graveyard, "late")
        var options = QueueOptions()
        options.messageTTL = 200
        options.deadLetterExchange = "expired"
        try declare(producer, "short", options)
        put(producer, "short", "stale")
        // A message's own expiration wins when it is sooner than the queue's TTL.
        put(producer, "short", "staler", properties: MessageProperties(expiration: 100))
        _ = try producer.drain()
        #expect(messages(try graveyard.drain()).isEmpty, "nothing has expired yet")
        try await broker.advance(by: .milliseconds(150))
        _ = try producer.drain()
        if target == .core {
            // Exactly: the head ("stale", 200 ms) blocks nothing; "staler" is not the head, so it
            // expires when it reaches the head, at the next dispatch after 200 ms.
            #expect(messages(try graveyard.drain()).isEmpty)
        }
        try await broker.advance(by: .milliseconds(100))
        _ = try producer.drain()
        let dead = messages(try graveyard.drain())
        #expect(dead.map(\.text) == ["stale", "staler"])
        #expect(dead.allSatisfy { $0.properties.headers["x-death-reason"] == "expired" && $0.properties.expiration == nil })
        #expect(broker.stat("expired") == 2)
    }

    @Test(arguments: RuleTarget.allCases)
    func confirmsCountEveryPublishAndNackTheRefusedOnes(_ target: RuleTarget) throws {
        let broker = try RuleBroker(target)
        let producer = try broker.connect()
        try declare(producer, "confirmed")
        for i in 1...3 { put(producer, "confirmed", "c\(i)", flags: PublishFlag.confirm) }
        // One CONFIRM(multiple) per batch of frames the broker read: how they were batched varies
        // over a socket, but the last one covers all three.
        let confirms = try producer.drain().compactMap { frame -> (UInt64, UInt8)? in
            if case .confirm(let sequence, let flags) = frame { (sequence, flags) } else { nil }
        }
        #expect(confirms.last?.0 == 3 && confirms.allSatisfy { $0.1 == AckFlag.multiple })
        #expect(confirms.map(\.0) == confirms.map(\.0).sorted())
        producer.send(.publishTo(flags: PublishFlag.confirm, exchange: "nowhere", routingKey: "k", payload: []))
        let refused = try producer.drain()
        #expect(refused.contains { if case .error(.unknownExchange, 0, _) = $0 { true } else { false } })
        #expect(refused.contains { if case .confirm(4, AckFlag.nack) = $0 { true } else { false } })
    }

    @Test(arguments: RuleTarget.allCases)
    func aMandatoryMessageThatReachesNoQueueIsReturned(_ target: RuleTarget) throws {
        let broker = try RuleBroker(target)
        let producer = try broker.connect()
        producer.send(.publishTo(flags: PublishFlag.mandatory, exchange: "amq.direct", routingKey: "nobody", payload: Array("lost".utf8)))
        let frames = try producer.drain()
        guard case .returned(.unroutable, "amq.direct", "nobody", _, let payload) = frames.first else {
            Issue.record("expected RETURNED, got \(frames)"); return
        }
        #expect(payload == Array("lost".utf8))
        #expect(broker.stat("returned") == 1)
    }

    func request(_ caller: Client, to queue: String, id: String) {
        caller.send(.publishTo(
            flags: PublishFlag.request, exchange: "", routingKey: queue,
            properties: MessageProperties(correlationID: id, replyTo: caller.inbox), payload: Array("ping".utf8)))
    }

    @Test(arguments: RuleTarget.allCases)
    func aReplyToTheCallersInboxArrivesAsDeliverZero(_ target: RuleTarget) throws {
        let broker = try RuleBroker(target)
        let responder = try broker.connect(), caller = try broker.connect()
        try declare(responder, "rpc")
        try consume(responder, "rpc")
        request(caller, to: "rpc", id: "r1")
        _ = try caller.drain()
        let got = messages(try responder.drain())
        #expect(got.first?.properties.replyTo == caller.inbox && got.first?.properties.correlationID == "r1")
        responder.send(.publishTo(flags: 0, exchange: "", routingKey: caller.inbox,
                                  properties: MessageProperties(correlationID: "r1"), payload: Array("pong".utf8)))
        _ = try responder.drain()
        let replies = try caller.drain()
        guard case .deliver(Inbox.subscriptionID, responder.connectionID, _, let properties, let payload) = replies.first else {
            Issue.record("expected DELIVER 0 from the responder, got \(replies)"); return
        }
        #expect(properties.correlationID == "r1" && payload == Array("pong".utf8))
    }

    @Test(arguments: RuleTarget.allCases)
    func aRequestNobodyCanAnswerIsToldAtOnce(_ target: RuleTarget) throws {
        let broker = try RuleBroker(target)
        let caller = try broker.connect()
        try declare(caller, "unserved")
        request(caller, to: "unserved", id: "r9")
        let frames = try caller.drain()
        guard case .routed(0, "r9") = frames.first else { Issue.record("expected ROUTED 0, got \(frames)"); return }
        // A request without a reply-to is refused outright.
        caller.send(.publishTo(flags: PublishFlag.request, exchange: "", routingKey: "unserved",
                               properties: MessageProperties(correlationID: "r10"), payload: []))
        let refused = try caller.drain()
        guard case .error(.invalidRequest, 0, _) = refused.first else { Issue.record("expected invalid-request, got \(refused)"); return }
    }

    @Test(arguments: RuleTarget.allCases)
    func aRefusedRequestComesBackAsAReturnNamingIt(_ target: RuleTarget) throws {
        let broker = try RuleBroker(target)
        let caller = try broker.connect()
        caller.send(.publishTo(
            flags: PublishFlag.request | PublishFlag.confirm, exchange: "nosuchx", routingKey: "k",
            properties: MessageProperties(correlationID: "r5", replyTo: caller.inbox), payload: Array("ping".utf8)))
        let frames = try caller.drain()
        guard case .returned(.unknownExchange, "nosuchx", "k", let properties, let payload)? = frames.first else {
            Issue.record("expected RETURN unknown-exchange, got \(frames)")
            return
        }
        #expect(properties.correlationID == "r5" && payload == Array("ping".utf8))
        #expect(properties.headers["evbus-refused"]?.contains("no exchange named \"nosuchx\"") == true)
        #expect(!frames.contains { if case .error = $0 { true } else { false } }, "the RETURN replaces the ERROR")
        #expect(frames.contains { if case .confirm(1, AckFlag.nack) = $0 { true } else { false } })
        #expect(broker.stat("rejected_requests") == 1)
    }

    @Test(arguments: RuleTarget.allCases)
    func aResponderThatGoesWithoutAnsweringIsReportedToTheCaller(_ target: RuleTarget) async throws {
        let broker = try RuleBroker(target)
        let responder = try broker.connect(), caller = try broker.connect()
        try declare(responder, "flaky")
        try consume(responder, "flaky", manualAck: true)
        request(caller, to: "flaky", id: "r2")
        _ = try caller.drain()
        let got = messages(try responder.drain())
        // Accepting the request (its ack) makes the broker watch it until answered...
        responder.send(.ack(deliveryTag: got[0].tag, flags: 0))
        _ = try responder.drain()
        try await broker.disconnect(responder)
        // ...so the caller hears at once that it never will be.
        let frames = try caller.drain()
        guard case .returned(.responderGone, "", let key, let properties, _) = frames.first else {
            Issue.record("expected RETURNED responder-gone, got \(frames)"); return
        }
        #expect(key == caller.inbox && properties.correlationID == "r2")
    }
}
