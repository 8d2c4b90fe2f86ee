import Evbus
import EvbusIO
import EvbusTestSupport
import Foundation
import Testing

/// Access control with real other users (docs/SECURITY.md): `evbus` run as unused uids through
/// `setpriv`, against the real broker binary. Each refusal checks the exit status and message,
/// the broker's log line and counter, and that a bystander (root, allowed everything) lost nothing.
@Suite struct AccessControlTests {
    /// A config file in a fresh directory; returns its path.
    func configFile(_ json: String) throws -> String {
        let path = TestPaths.dataDirectory("cfg") + ".json"
        try json.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static let rootMayDoEverything = """
        {"uid": 0, "configure": ["#"], "publish": ["#"], "publishTo": {"#": ["#"]}, "subscribe": ["#"], "consume": ["#"], "request": ["#"], "respond": ["#"]}
        """

    func counter(_ name: String, _ socket: String) async throws -> UInt64 {
        let probe = try await Peer.connect(to: socket, name: "probe")
        defer { Task { await probe.close() } }
        return try await probe.brokerStats().first { $0.name == name }?.value ?? 0
    }

    @Test func theSocketsModeAndGroupDecideWhoMayConnect() async throws {
        // The default mode, 0600: only the broker's own user (and root) may connect.
        let closed = try await BrokerProcess()
        let refused = try await OtherUser.run(["pub", "a.b", "x", "--socket", closed.socketPath])
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("ermission denied"), "\(refused.stderr)")
        await closed.stop()

        // 0660 and a group: members of the group may, others may not.
        let config = try configFile(#"{"socketMode": "0660", "socketGroup": "\#(OtherUser.group)"}"#)
        let shared = try await BrokerProcess(arguments: ["--config", config])
        var info = stat()
        #expect(lstat(shared.socketPath, &info) == 0)
        #expect(info.st_gid == OtherUser.group)
        #expect(info.st_mode & 0o777 == 0o660)
        let bystander = try await shared.connect("bystander")
        let received = try await bystander.subscribe("a.#")
        let member = try await OtherUser.run(groups: [OtherUser.group], ["pub", "a.b", "from a member", "--socket", shared.socketPath])
        #expect(member.status == 0, "\(member.stderr)")
        let outsider = try await OtherUser.run(uid: OtherUser.secondUID, ["pub", "a.b", "from outside", "--socket", shared.socketPath])
        #expect(outsider.status != 0)
        #expect(outsider.stderr.contains("ermission denied"), "\(outsider.stderr)")
        var it = received.makeAsyncIterator()
        #expect(try await it.next()?.text == "from a member")
        await bystander.close()
        await shared.stop()
    }

    @Test func rulesRefuseWhatTheyDoNotGrantAndNothingElse() async throws {
        let config = try configFile("""
            {"socketMode": "0666", "access": [
              {"uid": \(OtherUser.uid), "publish": ["sensors.#"], "subscribe": ["sensors.*.temp"]},
              \(Self.rootMayDoEverything)
            ]}
            """)
        let broker = try await BrokerProcess(arguments: ["--config", config])
        let bystander = try await broker.connect("bystander")
        let everything = try await bystander.subscribe("#")
        var it = everything.makeAsyncIterator()

        let allowed = try await OtherUser.run(["pub", "sensors.hall.temp", "21", "--socket", broker.socketPath])
        #expect(allowed.status == 0, "\(allowed.stderr)")
        #expect(try await it.next()?.text == "21")

        let publish = try await OtherUser.run(["pub", "commands.stop", "now", "--socket", broker.socketPath])
        #expect(publish.status == 1)
        #expect(publish.stderr.contains("uid \(OtherUser.uid) may not publish to topic \"commands.stop\""), "\(publish.stderr)")

        let subscribe = try await OtherUser.run(["sub", "sensors.#", "--count", "1", "--socket", broker.socketPath])
        #expect(subscribe.status != 0)
        #expect(subscribe.stderr.contains("may not subscribe to \"sensors.#\""), "\(subscribe.stderr)")

        let declare = try await OtherUser.run(["declare", "queue", "jobs", "--socket", broker.socketPath])
        #expect(declare.status != 0)
        #expect(declare.stderr.contains("may not declare queue \"jobs\""), "\(declare.stderr)")

        #expect(try await counter("access_refused", broker.socketPath) == 3)
        #expect(await eventually { broker.process.stderr.contains("access refused: uid \(OtherUser.uid) gid \(OtherUser.uid) pid ") })
        // The bystander's stream carried on: the refused message never arrived, the next one does.
        try await bystander.publish("after.all", "still here")
        #expect(try await it.next()?.text == "still here")
        await bystander.close()
        await broker.stop()
    }

    @Test func aReloadCancelsASubscriptionAndABadFileChangesNothing() async throws {
        let config = try configFile("""
            {"socketMode": "0666", "access": [
              {"uid": \(OtherUser.uid), "publish": ["sensors.#"], "subscribe": ["sensors.#"]},
              \(Self.rootMayDoEverything)
            ]}
            """)
        let broker = try await BrokerProcess(arguments: ["--config", config])
        let sub = try OtherUser.start(["sub", "sensors.#", "--socket", broker.socketPath])
        #expect(try await waitForSubscriptions(1, at: broker.socketPath))
        let bystander = try await broker.connect("bystander")
        let mine = try await bystander.subscribe("sensors.#")
        var it = mine.makeAsyncIterator()

        // A file with an error: refused with its key path, the rules in force stay.
        try #"{"socketMode": "0666", "access": [{"uid": 1, "subscribe": ["a.#b"]}]}"#.write(toFile: config, atomically: true, encoding: .utf8)
        broker.process.signal(SIGHUP)
        #expect(await eventually { broker.process.stderr.contains("reload refused") && broker.process.stderr.contains("access[0].subscribe[0]") })
        #expect(sub.isRunning)
        try await bystander.publish("sensors.a", "one")
        #expect(try await it.next()?.text == "one")

        // Rules without the subscription: it is cancelled, its client told.
        try """
            {"socketMode": "0666", "access": [{"uid": \(OtherUser.uid), "publish": ["sensors.#"]}, \(Self.rootMayDoEverything)]}
            """.write(toFile: config, atomically: true, encoding: .utf8)
        broker.process.signal(SIGHUP)
        #expect(await sub.waitForExit(seconds: 20) != 0)
        #expect(sub.stdoutLines == ["sensors.a\tone"])
        #expect(sub.stderr.contains("may not subscribe to \"sensors.#\""), "\(sub.stderr)")
        #expect(broker.process.stderr.contains("1 subscriptions and consumers cancelled"))
        // The bystander, still allowed, lost nothing.
        try await bystander.publish("sensors.b", "two")
        #expect(try await it.next()?.text == "two")
        let publish = try await OtherUser.run(["pub", "sensors.c", "three", "--socket", broker.socketPath])
        #expect(publish.status == 0, "publishing is still granted: \(publish.stderr)")
        #expect(try await it.next()?.text == "three")
        await bystander.close()
        await broker.stop()
    }

    @Test func aQuotaOnConnectionsRefusesTheOneTooMany() async throws {
        let config = try configFile("""
            {"socketMode": "0666", "quotas": [{"uid": \(OtherUser.uid), "connections": 1}]}
            """)
        let broker = try await BrokerProcess(arguments: ["--config", config])
        let first = try OtherUser.start(["sub", "a.#", "--socket", broker.socketPath])
        #expect(try await waitForSubscriptions(1, at: broker.socketPath))
        let second = try await OtherUser.run(["pub", "a.b", "x", "--socket", broker.socketPath])
        #expect(second.status != 0)
        #expect(second.stderr.contains("already holds 1 connections"), "\(second.stderr)")
        #expect(try await counter("quota_refused", broker.socketPath) == 1)
        // Another uid is not affected by this one's quota.
        let other = try await OtherUser.run(uid: OtherUser.secondUID, ["pub", "a.b", "y", "--socket", broker.socketPath])
        #expect(other.status == 0, "\(other.stderr)")
        #expect(first.isRunning, "the connection within the quota carries on")
        first.signal(SIGTERM)
        await broker.stop()
    }
}

/// Identity on every delivery: the uid, gid and pid the kernel reported, whatever the publisher
/// calls itself, through `evbus sub --json` and `evbus consume --json`.
@Suite struct SenderIdentityEndToEndTests {
    @Test func subscribersAndConsumersSeeTheKernelsIdentityNotTheClaimedOne() async throws {
        let config = TestPaths.dataDirectory("cfg") + ".json"
        try #"{"socketMode": "0666"}"#.write(toFile: config, atomically: true, encoding: .utf8)
        let broker = try await BrokerProcess(arguments: ["--config", config])
        let sub = try RunningProcess.evbus(["sub", "sensors.#", "--json", "--count", "1", "--socket", broker.socketPath])
        #expect(try await waitForSubscriptions(1, at: broker.socketPath))
        let declared = try await RunningProcess.runEvbus(["declare", "queue", "jobs", "--socket", broker.socketPath])
        #expect(declared.status == 0, "\(declared.stderr)")
        let pub = try await OtherUser.run(["pub", "sensors.door", "open", "--name", "root", "--socket", broker.socketPath])
        #expect(pub.status == 0, "\(pub.stderr)")
        let job = try await OtherUser.run(uid: OtherUser.secondUID, ["pub", "--exchange", "", "--key", "jobs", "work", "--name", "admin", "--socket", broker.socketPath])
        #expect(job.status == 0, "\(job.stderr)")
        #expect(await sub.waitForExit() == 0)
        let event = try JSONSerialization.jsonObject(with: Data(sub.stdout.utf8)) as? [String: Any]
        let sender = event?["sender"] as? [String: Any]
        #expect(sender?["uid"] as? Int == Int(OtherUser.uid), "\(sub.stdout)")
        #expect(sender?["gid"] as? Int == Int(OtherUser.uid))
        #expect((sender?["pid"] as? Int ?? 0) > 0)
        #expect(sender?["name"] as? String == "root", "the name is what it claimed; the uid is what it is")
        // The queued message's publisher has gone by now: the broker still knows who it was.
        let consume = try await RunningProcess.runEvbus(["consume", "jobs", "--json", "--count", "1", "--socket", broker.socketPath])
        #expect(consume.status == 0, "\(consume.stderr)")
        let delivery = try JSONSerialization.jsonObject(with: Data(consume.stdout.utf8)) as? [String: Any]
        let from = delivery?["sender"] as? [String: Any]
        #expect(from?["uid"] as? Int == Int(OtherUser.secondUID), "\(consume.stdout)")
        #expect(from?["name"] as? String == "admin")
        await broker.stop()
    }

    @Test func connectionIdsAfterARestartNeverNameAnEarlierPublisher() async throws {
        let data = TestPaths.dataDirectory("ids")
        let first = try await BrokerProcess(dataDir: data)
        let admin = try await first.connect("admin")
        _ = try await admin.declareQueue("keep", QueueOptions(durable: true))
        for _ in 0..<3 { let p = try await first.connect("burn"); await p.close() }
        let producer = try await first.connect("producer")
        try await producer.publish(to: "", key: "keep", "kept", confirm: true, persistent: true)
        try await producer.waitForConfirms()
        let producerID = producer.connectionID
        await producer.close()
        await admin.close()
        await first.stop()
        let second = try await BrokerProcess(dataDir: data)
        let fresh = try await second.connect("fresh")
        #expect(fresh.connectionID > producerID, "a new connection never takes the id of a publisher whose message survived")
        let consumer = try await fresh.consume("keep", ack: .manual)
        var it = consumer.makeAsyncIterator()
        let m = try #require(try await it.next())
        #expect(m.publisher == producerID)
        #expect(m.sender == nil, "published before the restart: the broker does not say who")
        await fresh.close()
        await second.stop()
    }
}
