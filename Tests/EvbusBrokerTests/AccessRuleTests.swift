import EvbusBroker
import EvbusTestSupport
import EvbusWire
import Foundation
import Testing

/// The access rules and quotas as the core applies them (docs/SECURITY.md): each permission
/// granted and refused, pattern containment, quotas, and a reload. Every refusal is checked for
/// its code, its log line, its counter, and that a bystander lost nothing.
@Suite struct AccessRuleTests {
    static let sensor = PeerIdentity(uid: 1001, gid: 1001, pid: 42)
    static let controller = PeerIdentity(uid: 1002, gid: 1002, pid: 43)
    static let operatorID = PeerIdentity(uid: 1003, gid: 1003, pid: 44, groups: [2000])

    /// A core with the config's `access` and `quotas` (JSON) in force.
    func broker(_ json: String) throws -> MemoryBroker {
        let config = try BrokerConfig.decode(Data(json.utf8))
        let b = MemoryBroker()
        b.core.installAccess(rules: config.access, quotas: config.quotas)
        return b
    }

    static let rules = """
        {"access": [
          {"uid": 1001, "publish": ["sensors.#"], "configure": ["sensor.#"], "publishTo": {"orders": ["eu.#"]}},
          {"uid": 1002, "consume": ["commands"], "subscribe": ["sensors.*.temp"], "request": ["rpc.fib"]},
          {"gid": 2000, "subscribe": ["#"], "consume": ["#"], "respond": ["rpc.#"], "configure": ["#"], "publish": ["#"]}
        ]}
        """

    func frames(_ b: MemoryBroker, _ s: ConnectionState) throws -> [Frame] {
        var out: [Frame] = []
        while let f = try b.nextFrame(for: s) { out.append(f) }
        return out
    }

    func expectRefused(_ b: MemoryBroker, _ s: ConnectionState, id: UInt32, _ code: ErrorCode = .accessRefused, mentioning text: String) throws {
        let got = try frames(b, s)
        guard case .error(let c, let requestID, let message)? = got.first, got.count == 1 else {
            Issue.record("expected one ERROR, got \(got)")
            return
        }
        #expect(c == code)
        #expect(requestID == id)
        #expect(message.contains(text), "\(message)")
    }

    @Test func withoutAnAccessSectionEveryoneMayDoEverything() throws {
        let b = MemoryBroker()
        let s = b.connect(Self.sensor)
        b.send([.subscribe(subscriptionID: 1, pattern: "#"), .declareQueue(requestID: 2, name: "jobs"), .publish(topic: "any.thing", payload: [1])], from: s)
        let got = try frames(b, s)
        #expect(got.count == 3, "\(got)")
        #expect(b.stat("access_refused") == 0)
    }

    @Test func publishingIsCheckedPerTopicAndARefusalTouchesNothingElse() throws {
        let b = try broker(Self.rules)
        let sensor = b.connect(Self.sensor)
        let watcher = b.connect(Self.operatorID)
        b.send([.subscribe(subscriptionID: 1, pattern: "#")], from: watcher)
        #expect(try frames(b, watcher) == [.ok(requestID: 1)])
        b.send([.publish(topic: "sensors.a.temp", payload: [1]), .publish(topic: "commands.stop", payload: [2]), .publish(topic: "sensors.b", payload: [3])], from: sensor)
        try expectRefused(b, sensor, id: 0, mentioning: "publish to topic \"commands.stop\"")
        let delivered = try frames(b, watcher).compactMap { f -> [UInt8]? in
            if case .deliver(_, _, _, _, let payload) = f { return payload }
            return nil
        }
        #expect(delivered == [[1], [3]], "the refused one only is missing; the connection carried on")
        #expect(b.stat("access_refused") == 1)
        #expect(b.logLines.contains { $0.contains("access refused: uid 1001 gid 1001 pid 42") && $0.contains("commands.stop") })
        // Refused once, refused again (the decision is cached, not the log line or the counter).
        b.send([.publish(topic: "commands.stop", payload: [2])], from: sensor)
        try expectRefused(b, sensor, id: 0, mentioning: "commands.stop")
        #expect(b.stat("access_refused") == 2)
    }

    @Test func publishingToAnExchangeNeedsItsKey() throws {
        let b = try broker(Self.rules)
        let admin = b.connect(Self.operatorID)
        b.send([.declareExchange(requestID: 1, name: "orders", kind: .topic), .declareQueue(requestID: 2, name: "eu"),
                .bind(requestID: 3, queue: "eu", exchange: "orders", key: "#")], from: admin)
        #expect(try frames(b, admin).count == 3)
        let sensor = b.connect(Self.sensor)
        b.send([.publishTo(flags: PublishFlag.confirm, exchange: "orders", routingKey: "eu.fr", payload: [1])], from: sensor)
        let first = try frames(b, sensor)
        #expect(first == [.confirm(sequence: 1, flags: AckFlag.multiple)], "\(first)")
        b.send([.publishTo(flags: PublishFlag.confirm, exchange: "orders", routingKey: "us.ny", payload: [2])], from: sensor)
        let got = try frames(b, sensor)
        guard case .error(.accessRefused, 0, let message)? = got.first else { return #expect(Bool(false), "\(got)") }
        #expect(message.contains("exchange \"orders\" with key \"us.ny\""))
        #expect(got.dropFirst().first == .confirm(sequence: 2, flags: AckFlag.nack), "a confirmed publish refused is nacked")
        #expect(b.core.topology.queues.compactMap { $0 }.first { $0.name == "eu" }?.messageCount == 1)
    }

    @Test func aSubscriptionMustLieInsideAGrantedPattern() throws {
        let b = try broker(Self.rules)
        let ctl = b.connect(Self.controller)
        b.send([.subscribe(subscriptionID: 1, pattern: "sensors.*.temp")], from: ctl)
        #expect(try frames(b, ctl) == [.ok(requestID: 1)])
        b.send([.subscribe(subscriptionID: 2, pattern: "sensors.#")], from: ctl)
        try expectRefused(b, ctl, id: 2, mentioning: "subscribe to \"sensors.#\"")
        b.send([.subscribe(subscriptionID: 3, pattern: "sensors.kitchen.temp")], from: ctl)
        #expect(try frames(b, ctl) == [.ok(requestID: 3)])
        b.send([.subscribe(subscriptionID: 4, pattern: "#")], from: ctl)
        try expectRefused(b, ctl, id: 4, mentioning: "\"#\"")
        #expect(b.stat("access_refused") == 2)
    }

    @Test func containment() {
        func inside(_ outer: String, _ inner: String) -> Bool { NamePattern(outer).contains(NamePattern(inner)) }
        #expect(inside("sensors.#", "sensors.*.temp"))
        #expect(inside("sensors.#", "sensors"))
        #expect(inside("sensors.#", "sensors.#"))
        #expect(!inside("sensors.*", "sensors.#"))
        #expect(!inside("sensors.*", "sensors"))
        #expect(inside("#", "#"))
        #expect(inside("#", "a.*.#"))
        #expect(!inside("a.#", "#"))
        #expect(!inside("*", "#"))
        #expect(inside("*", "*"))
        #expect(!inside("a", "*"))
        #expect(inside("a.#.b", "a.b"))
        #expect(inside("a.#.b", "a.x.y.b"))
        #expect(inside("a.#.b", "a.*.b"))
        #expect(inside("a.#.b", "a.#.b"))
        #expect(!inside("a.#.b", "a.#"))
        #expect(!inside("a.#.b", "a.b.c"))
        #expect(inside("#.b", "x.#.b"))
        #expect(!inside("*.#", "#"), "conservative: an inner # is held only by an outer #")
        #expect(NamePattern("a.*").matches("a.b"))
        #expect(!NamePattern("a.*").matches("a.b.c"))
        #expect(!NamePattern("a.*").matches("a.*.x"))
    }

    @Test func configuringNeedsTheName() throws {
        let b = try broker(Self.rules)
        let sensor = b.connect(Self.sensor)
        b.send([.declareQueue(requestID: 1, name: "sensor.readings")], from: sensor)
        guard case .queueOK? = try frames(b, sensor).first else { return #expect(Bool(false)) }
        let refused: [(Frame, String)] = [
            (.declareQueue(requestID: 2, name: "jobs"), "declare queue \"jobs\""),
            (.declareExchange(requestID: 3, name: "x", kind: .fanout), "declare exchange \"x\""),
            (.bind(requestID: 4, queue: "jobs", exchange: "amq.topic", key: "#"), "bind queue \"jobs\""),
            (.deleteQueue(requestID: 5, name: "commands"), "delete queue \"commands\""),
            (.purgeQueue(requestID: 6, name: "commands"), "purge queue \"commands\""),
            (.declareQueue(requestID: 7, name: ""), "server-named"),
        ]
        for (frame, text) in refused {
            b.send([frame], from: sensor)
            try expectRefused(b, sensor, id: Self.id(frame), mentioning: text)
        }
        #expect(b.stat("access_refused") == UInt64(refused.count))
        #expect(!b.core.topology.hasQueue("jobs"))
        #expect(b.core.topology.liveQueues.filter { $0.name.hasPrefix("amq.gen") }.isEmpty, "the refused server-named queue is gone")
    }

    static func id(_ f: Frame) -> UInt32 {
        switch f {
        case .declareQueue(let id, _, _, _), .declareExchange(let id, _, _, _, _), .bind(let id, _, _, _),
            .deleteQueue(let id, _, _, _), .purgeQueue(let id, _):
            id
        default: 0
        }
    }

    @Test func consumingNeedsTheQueueAndRequestsAndRepliesNeedTheirGrants() throws {
        let b = try broker(Self.rules)
        let admin = b.connect(Self.operatorID)
        b.send([.declareQueue(requestID: 1, name: "commands"), .declareQueue(requestID: 2, name: "rpc.fib"), .declareQueue(requestID: 3, name: "secrets")], from: admin)
        _ = try frames(b, admin)
        let ctl = b.connect(Self.controller)
        b.send([.consume(consumerID: 1, queue: "commands", flags: 0, prefetch: 0)], from: ctl)
        #expect(try frames(b, ctl) == [.ok(requestID: 1)])
        b.send([.consume(consumerID: 2, queue: "secrets", flags: 0, prefetch: 0)], from: ctl)
        try expectRefused(b, ctl, id: 2, mentioning: "consume queue \"secrets\"")
        // The operator answers rpc.fib (respond); the controller may call it, and only it.
        b.send([.consume(consumerID: 9, queue: "rpc.fib", flags: 0, prefetch: 0)], from: admin)
        #expect(try frames(b, admin) == [.ok(requestID: 9)])
        let inbox = Inbox.name(connectionID: ctl.id)
        let call = MessageProperties(correlationID: "c1", replyTo: inbox)
        b.send([.publishTo(flags: PublishFlag.request, exchange: "", routingKey: "rpc.fib", properties: call, payload: [5])], from: ctl)
        guard case .message? = try frames(b, admin).first else { return #expect(Bool(false), "the request arrives") }
        b.send([.publishTo(flags: PublishFlag.request, exchange: "", routingKey: "secrets", properties: MessageProperties(correlationID: "c2", replyTo: inbox), payload: [])], from: ctl)
        let refusal = try frames(b, ctl)
        guard case .returned(.accessRefused, _, "secrets", let props, _)? = refusal.first else { return #expect(Bool(false), "\(refusal)") }
        #expect(props.correlationID == "c2", "a refused request comes back as its call's RETURN")
        // The operator replies (respond); the sensor, holding no request and no respond grant, may not.
        b.send([.publishTo(flags: 0, exchange: "", routingKey: inbox, properties: MessageProperties(correlationID: "c1"), payload: [8])], from: admin)
        guard case .deliver(0, _, _, _, [8])? = try frames(b, ctl).first else { return #expect(Bool(false), "the reply arrives") }
        let sensor = b.connect(Self.sensor)
        b.send([.publishTo(flags: 0, exchange: "", routingKey: inbox, properties: MessageProperties(correlationID: "c1"), payload: [9])], from: sensor)
        try expectRefused(b, sensor, id: 0, mentioning: "reply into \(inbox)")
        #expect(try frames(b, ctl).isEmpty, "no forged reply reached the caller")
    }

    @Test func quotasLimitWhatOneUidHolds() throws {
        let b = try broker("""
            {"quotas": [{"uid": 1001, "connections": 2, "subscriptions": 2, "queues": 1, "queuedBytes": 2000}]}
            """)
        let one = b.connect(Self.sensor)
        let two = b.connect(Self.sensor)
        let bystander = b.connect(Self.controller)
        b.send([.subscribe(subscriptionID: 1, pattern: "a"), .subscribe(subscriptionID: 2, pattern: "b")], from: one)
        #expect(try frames(b, one).count == 2)
        b.send([.subscribe(subscriptionID: 3, pattern: "c")], from: two)
        try expectRefused(b, two, id: 3, .quotaExceeded, mentioning: "holds 2 subscriptions")
        b.send([.unsubscribe(subscriptionID: 2)], from: one)
        _ = try frames(b, one)
        b.send([.subscribe(subscriptionID: 3, pattern: "c")], from: two)
        #expect(try frames(b, two) == [.ok(requestID: 3)], "an ended subscription gives its room back")
        // A third connection is refused at HELLO.
        let three = b.core.open(identity: Self.sensor)
        #expect(throws: WireError.self) { try b.core.hello(three, name: "three") }
        b.core.closed(three)
        // Queues, and the bytes waiting in them.
        b.send([.declareQueue(requestID: 4, name: "q1"), .declareQueue(requestID: 5, name: "q2")], from: one)
        let got = try frames(b, one)
        guard case .error(.quotaExceeded, 5, let message)? = got.last else { return #expect(Bool(false), "\(got)") }
        #expect(message.contains("holds 1 queues"))
        for i in 0..<4 {
            b.send([.publishTo(flags: PublishFlag.confirm, exchange: "", routingKey: "q1", payload: [UInt8](repeating: UInt8(i), count: 800))], from: bystander)
        }
        let answers = try frames(b, bystander)
        #expect(answers.contains { if case .error(.quotaExceeded, 0, _) = $0 { true } else { false } }, "\(answers)")
        #expect(b.stat("quota_refused") >= 3)
        // The bystander's own subscriptions are untouched by uid 1001's quota.
        for i in 0..<5 { b.send([.subscribe(subscriptionID: UInt32(10 + i), pattern: "x.\(i)")], from: bystander) }
        #expect(try frames(b, bystander).count == 5)
    }

    @Test func aReloadCancelsWhatTheNewRulesNoLongerAllow() throws {
        let b = try broker(Self.rules)
        let ctl = b.connect(Self.controller)
        let admin = b.connect(Self.operatorID)
        b.send([.declareQueue(requestID: 1, name: "commands")], from: admin)
        _ = try frames(b, admin)
        b.send([.subscribe(subscriptionID: 1, pattern: "sensors.*.temp"), .consume(consumerID: 2, queue: "commands", flags: 0, prefetch: 0)], from: ctl)
        #expect(try frames(b, ctl).count == 2)
        b.send([.subscribe(subscriptionID: 5, pattern: "#"), .consume(consumerID: 7, queue: "commands", flags: 0, prefetch: 0)], from: admin)
        #expect(try frames(b, admin) == [.ok(requestID: 5), .ok(requestID: 7)])
        let refusedBefore = b.stat("access_refused")
        let tighter = try BrokerConfig.decode(Data("""
            {"access": [
              {"uid": 1002, "consume": ["commands"]},
              {"gid": 2000, "subscribe": ["#"], "publish": ["#"]}
            ]}
            """.utf8))
        let cancelled = b.core.installAccess(rules: tighter.access, quotas: tighter.quotas)
        #expect(cancelled == 2)
        #expect(b.stat("access_refused") == refusedBefore + 2)
        #expect(b.logLines.contains { $0.contains("uid 1003 gid 1003 pid 44 may not consume queue \"commands\" (after a reload") })
        let adminGot = try frames(b, admin)
        guard adminGot.count == 2, case .error(.accessRefused, 7, let why) = adminGot[0] else { return #expect(Bool(false), "\(adminGot)") }
        #expect(why.contains("consumer 7 cancelled"))
        #expect(adminGot[1] == .cancel(consumerID: 7))
        let got = try frames(b, ctl)
        guard got.count == 2, case .error(.accessRefused, 1, let message) = got[0] else { return #expect(Bool(false), "\(got)") }
        #expect(message.contains("subscription 1 cancelled"))
        #expect(got[1] == .cancel(consumerID: 1))
        b.send([.publish(topic: "sensors.k.temp", payload: [1])], from: admin)
        #expect(try frames(b, ctl).isEmpty, "the cancelled subscription delivers nothing")
        guard case .deliver(5, _, _, _, [1])? = try frames(b, admin).first else { return #expect(Bool(false), "the bystander still receives") }
        b.send([.subscribe(subscriptionID: 6, pattern: "sensors.*.temp")], from: ctl)
        try expectRefused(b, ctl, id: 6, mentioning: "subscribe")
        #expect(b.core.topology.liveQueues.first { $0.name == "commands" }?.consumers.count == 1, "the consumer still allowed stays")
    }

    @Test func badAccessConfigsAreRefusedWithTheirKeyPath() {
        let cases: [(String, String, String)] = [
            (#"{"access": [{"uid": 1, "publsh": ["a"]}]}"#, "access[0].publsh", "unknown key"),
            (#"{"access": [{"uid": 1, "publish": ["a.#b"]}]}"#, "access[0].publish[0]", "not a valid pattern"),
            (#"{"access": [{"publish": ["a"]}]}"#, "access[0]", "whom it is about"),
            (#"{"access": [{"uid": 1, "gid": 2}]}"#, "access[0]", "more than one"),
            (#"{"access": [{"user": "no-such-user-evbus"}]}"#, "access[0].user", "no user named"),
            (#"{"access": [{"anyone": false}]}"#, "access[0].anyone", "must be true"),
            (#"{"quotas": [{"uid": 1}]}"#, "quotas[0]", "sets no limit"),
            (#"{"quotas": [{"uid": 1, "connections": -1}]}"#, "quotas[0].connections", "negative"),
            (#"{"socketGroup": "no-such-group-evbus"}"#, "socketGroup", "no group named"),
        ]
        for (json, path, reason) in cases {
            do {
                _ = try BrokerConfig.decode(Data(json.utf8))
                Issue.record("accepted \(json)")
            } catch {
                #expect(error.keyPath == path, "\(json): \(error)")
                #expect(error.reason.contains(reason), "\(json): \(error)")
            }
        }
    }
}

/// docs/SECURITY.md's worked example, `Configs/shared-bus.json`, does what the document says.
@Suite struct SharedBusExampleTests {
    @Test func theSensorTheControllerAndTheOperatorMayDoWhatTheDocumentSays() throws {
        let config = try BrokerConfig.load(file: ConfigTests.configsDirectory.appendingPathComponent("shared-bus.json").path)
        let b = MemoryBroker()
        try b.core.topology.declare(config)
        b.core.installAccess(rules: config.access, quotas: config.quotas)
        let sensor = b.connect(PeerIdentity(uid: 1001, gid: 1001, pid: 10), name: "sensord")
        let controller = b.connect(PeerIdentity(uid: 1002, gid: 1002, pid: 11), name: "controller")
        let operatorPeer = b.connect(PeerIdentity(uid: 1003, gid: 1003, pid: 12, groups: [2000]), name: "operator")
        func answers(_ s: ConnectionState) throws -> [Frame] {
            var out: [Frame] = []
            while let f = try b.nextFrame(for: s) { out.append(f) }
            return out
        }
        func refused(_ frames: [Frame]) -> Bool { frames.contains { if case .error(.accessRefused, _, _) = $0 { true } else { false } } }
        b.send([.subscribe(subscriptionID: 1, pattern: "#")], from: operatorPeer)
        #expect(try answers(operatorPeer) == [.ok(requestID: 1)], "the operator reads everything")
        b.send([.publish(topic: "sensors.hall.temp", payload: [1])], from: sensor)
        #expect(try answers(sensor).isEmpty)
        b.send([.publish(topic: "commands.stop", payload: [1]), .subscribe(subscriptionID: 2, pattern: "#")], from: sensor)
        #expect(try answers(sensor).filter { if case .error(.accessRefused, _, _) = $0 { true } else { false } }.count == 2, "the sensor only publishes sensors.#")
        b.send([.consume(consumerID: 3, queue: "commands", flags: 0, prefetch: 0)], from: controller)
        #expect(try answers(controller) == [.ok(requestID: 3)])
        b.send([.publish(topic: "sensors.fake", payload: [2]), .subscribe(subscriptionID: 4, pattern: "sensors.#")], from: controller)
        #expect(refused(try answers(controller)), "the controller only consumes commands")
        b.send([.publishTo(flags: 0, exchange: "", routingKey: "commands", payload: [3])], from: operatorPeer)
        #expect(refused(try answers(operatorPeer)), "the operator reads; it does not command")
        #expect(config.quotas.last?.connections == 64)
    }
}

/// Every kind of refusal, one by one: its code and request id, its log line with uid and pid,
/// its counter, and a bystander whose subscription keeps receiving.
@Suite struct AccessRefusalTests {
    static let cases: [(Frame, UInt32, String)] = [
        (.publish(topic: "commands.stop", payload: [1]), 0, "publish to topic \"commands.stop\""),
        (.publishTo(flags: 0, exchange: "amq.topic", routingKey: "commands.go", payload: [1]), 0, "publish to topic \"commands.go\""),
        (.publishTo(flags: 0, exchange: "amq.direct", routingKey: "k", payload: [1]), 0, "publish to exchange \"amq.direct\" with key \"k\""),
        (.publishTo(flags: 0, exchange: "", routingKey: "amq.inbox.1", payload: [1]), 0, "reply into amq.inbox.1"),
        (.subscribe(subscriptionID: 3, pattern: "#"), 3, "subscribe to \"#\""),
        (.consume(consumerID: 4, queue: "work", flags: 0, prefetch: 0), 4, "consume queue \"work\""),
        (.declareExchange(requestID: 5, name: "x", kind: .direct), 5, "declare exchange \"x\""),
        (.deleteExchange(requestID: 6, name: "x"), 6, "delete exchange \"x\""),
        (.declareQueue(requestID: 7, name: "mine"), 7, "declare queue \"mine\""),
        (.deleteQueue(requestID: 8, name: "work"), 8, "delete queue \"work\""),
        (.purgeQueue(requestID: 9, name: "work"), 9, "purge queue \"work\""),
        (.bind(requestID: 10, queue: "work", exchange: "amq.topic", key: "#"), 10, "bind queue \"work\""),
        (.unbind(requestID: 11, queue: "work", exchange: "amq.topic", key: "#"), 11, "bind queue \"work\""),
    ]

    @Test(arguments: cases.indices)
    func aRefusalIsCodedLoggedCountedAndTouchesNobodyElse(_ index: Int) throws {
        let (frame, id, text) = Self.cases[index]
        let b = MemoryBroker()
        let config = try BrokerConfig.decode(Data("""
            {"access": [{"uid": 1001, "publish": ["sensors.#"]}, {"uid": 0, "configure": ["#"], "subscribe": ["#"], "publish": ["#"]}]}
            """.utf8))
        b.core.installAccess(rules: config.access, quotas: config.quotas)
        let root = b.connect(PeerIdentity(uid: 0, gid: 0, pid: 1))
        b.send([.declareQueue(requestID: 1, name: "work"), .subscribe(subscriptionID: 2, pattern: "#")], from: root)
        _ = try drain(b, root)
        let user = b.connect(PeerIdentity(uid: 1001, gid: 1001, pid: 77))
        b.send([frame], from: user)
        let got = try drain(b, user)
        guard got.count == 1, case .error(.accessRefused, let requestID, let message) = got[0] else {
            Issue.record("\(frame.type.name): expected one ERROR access-refused, got \(got)")
            return
        }
        #expect(requestID == id)
        #expect(message.contains(text), "\(message)")
        #expect(b.stat("access_refused") == 1)
        #expect(b.logLines.contains { $0.contains("access refused: uid 1001 gid 1001 pid 77") && $0.contains(text) }, "\(b.logLines)")
        // The refused operation changed nothing; the user and the bystander both carry on.
        #expect(!b.core.topology.hasQueue("mine") && b.core.topology.exchanges["x"] == nil)
        #expect(b.core.topology.hasQueue("work"))
        b.send([.publish(topic: "sensors.ok", payload: [9])], from: user)
        #expect(try drain(b, user).isEmpty)
        let seen = try drain(b, root)
        #expect(seen == [.deliver(subscriptionID: 2, publisher: user.id, topic: "sensors.ok", payload: [9])], "\(seen)")
    }

    func drain(_ b: MemoryBroker, _ s: ConnectionState) throws -> [Frame] {
        var out: [Frame] = []
        while let f = try b.nextFrame(for: s) { out.append(f) }
        return out
    }
}

/// A message a queued-bytes quota refuses leaves no trace: not in the log of a durable queue, and
/// no stale refusal for the next publish (a dead letter refused the same way).
@Suite struct QueuedBytesQuotaTests {
    static let owner = PeerIdentity(uid: 1001, gid: 1001, pid: 5)

    func drain(_ b: MemoryBroker, _ s: ConnectionState) throws -> [Frame] {
        var out: [Frame] = []
        while let f = try b.nextFrame(for: s) { out.append(f) }
        return out
    }

    @Test func aRefusedPersistentMessageIsNeverRecorded() throws {
        let b = MemoryBroker(persisting: true)
        b.core.installAccess(rules: nil, quotas: [Quota(who: .uid(1001), queuedBytes: 1500)])
        let owner = b.connect(Self.owner)
        b.send([.declareQueue(requestID: 1, name: "d", options: QueueOptions(durable: true))], from: owner)
        b.storageDone()
        _ = try drain(b, owner)
        let producer = b.connect()
        for _ in 0..<4 {
            b.send([.publishTo(flags: PublishFlag.confirm, exchange: "", routingKey: "d", properties: MessageProperties(persistent: true), payload: [UInt8](repeating: 1, count: 1000))], from: producer)
            b.storageDone()
        }
        let answers = try drain(b, producer)
        let nacks = answers.filter { if case .confirm(_, let f) = $0 { f & AckFlag.nack != 0 } else { false } }.count
        let queued = b.core.topology.liveQueues.first { $0.name == "d" }!.messageCount
        #expect(queued == 2 && nacks == 2, "\(answers)")
        #expect(b.stat("store_persisted") == UInt64(queued), "only the messages the queue took were recorded")
    }

    @Test func aDeadLetterRefusedByAQuotaDoesNotRefuseTheNextPublish() throws {
        let b = MemoryBroker()
        b.core.installAccess(rules: nil, quotas: [Quota(who: .uid(1001), queuedBytes: 1)])
        let owner = b.connect(Self.owner)
        var options = QueueOptions()
        options.deadLetterExchange = ""
        options.deadLetterRoutingKey = "full"
        let admin = b.connect()
        b.send([.declareQueue(requestID: 1, name: "src", options: options),
                .consume(consumerID: 2, queue: "src", flags: ConsumeFlag.manualAck, prefetch: 0)], from: admin)
        b.send([.declareQueue(requestID: 3, name: "full")], from: owner)
        _ = try drain(b, admin)
        _ = try drain(b, owner)
        let producer = b.connect()
        b.send([.publishTo(flags: 0, exchange: "", routingKey: "full", payload: [1])], from: producer)  // fills uid 1001's quota
        b.send([.publishTo(flags: 0, exchange: "", routingKey: "src", payload: [2])], from: producer)
        guard case .message(2, let tag, _, _, _, _, _, _)? = try drain(b, admin).first else { return #expect(Bool(false)) }
        b.send([.nack(deliveryTag: tag, flags: 0)], from: admin)  // its dead letter meets the full quota
        #expect(b.logLines.contains { $0.contains("dead letter for queue \"full\" discarded") })
        _ = try drain(b, producer)
        b.send([.publishTo(flags: PublishFlag.confirm, exchange: "", routingKey: "src", payload: [3])], from: producer)
        #expect(try drain(b, producer) == [.confirm(sequence: 1, flags: AckFlag.multiple)], "the next publish is not refused for an old reason")
    }
}
