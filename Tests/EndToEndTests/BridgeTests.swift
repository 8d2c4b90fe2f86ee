import Evbus
import EvbusBridge
import EvbusNATS
import EvbusTestSupport
import Foundation
import Testing

/// Two brokers standing for two machines, each with an `evbus bridge` process, joined by a real
/// `nats-server`.
@Suite struct BridgeTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func bridge(
        _ name: String, _ broker: BrokerProcess, _ nats: NATSServerProcess, export: [String], import imports: [String],
        services: [String: Any]? = nil, jetstream: [[String: String]]? = nil
    ) async throws -> RunningProcess {
        try await startBridge(name, socket: broker.socketPath, servers: [nats.url], export: export, import: imports, services: services, jetstream: jetstream)
    }

    @Test func aMessageCrossesWithItsPropertiesAndIdentityInOrder() async throws {
        let nats = try await NATSServerProcess()
        let a = try await BrokerProcess(), b = try await BrokerProcess()
        let bridgeA = try await bridge("machine-a", a, nats, export: ["sensors.#"], import: [])
        let bridgeB = try await bridge("machine-b", b, nats, export: [], import: ["sensors.#"])
        let subscriber = try await Peer.connect(to: b.socketPath, name: "dashboard")
        let events = try await subscriber.subscribe("sensors.#")
        let thermometer = try await Peer.connect(to: a.socketPath, name: "thermometer")
        for i in 0..<50 {
            var p = MessageProperties()
            p.contentType = "text/plain"
            p.headers = ["unit": "celsius", "seq": "\(i)"]
            try await thermometer.publish("sensors.kitchen.temp", "\(i)", properties: p)
        }
        var got: [Event] = []
        for try await e in events {
            got.append(e)
            if got.count == 50 { break }
        }
        #expect(got.map(\.text) == (0..<50).map(String.init))
        let event = got[0]
        #expect(event.topic == "sensors.kitchen.temp" && event.properties.contentType == "text/plain")
        #expect(event.properties.headers["unit"] == "celsius" && event.properties.headers["seq"] == "0")
        #expect(event.properties.headers[Bridge.Header.origin] == "machine-a")
        // Who published it on machine A, as A's broker saw it (one header: RemotePublisher):
        let publisher = RemotePublisher(of: event.properties)
        #expect(publisher == RemotePublisher(uid: getuid(), gid: getgid(), pid: UInt32(getpid()), name: "thermometer"))
        #expect(event.properties.headers["Evbus-Publisher"] == "uid=\(getuid()) gid=\(getgid()) pid=\(getpid()) name=thermometer")
        // Its counters, on request, and in its log on SIGUSR1.
        let stats = try await RunningProcess.runEvbus(["rpc", "evbus.bridge.machine-a.stats", "", "--socket", a.socketPath])
        #expect(stats.status == 0 && stats.stdout.contains("exported=50 ") && stats.stdout.contains("nats=\(nats.url)"), "\(stats.stdout)\(stats.stderr)")
        bridgeB.signal(SIGUSR1)
        #expect(await eventually { bridgeB.stderr.contains("event=counters") && bridgeB.stderr.contains("imported=50 ") })
        for p in [bridgeA, bridgeB] { p.signal(SIGTERM) }
        let statusA = await bridgeA.waitForExit(), statusB = await bridgeB.waitForExit()
        #expect(statusA == 0 && statusB == 0)
        await subscriber.close()
        await thermometer.close()
    }

    @Test func bothSidesExportingAndImportingEverythingExchangeEachMessageOnce() async throws {
        let nats = try await NATSServerProcess()
        let a = try await BrokerProcess(), b = try await BrokerProcess()
        let bridgeA = try await bridge("a", a, nats, export: ["#"], import: ["#"])
        let bridgeB = try await bridge("b", b, nats, export: ["#"], import: ["#"])
        let onA = try await Peer.connect(to: a.socketPath, name: "on-a"), onB = try await Peer.connect(to: b.socketPath, name: "on-b")
        let seenA = try await onA.subscribe("t.#"), seenB = try await onB.subscribe("t.#")
        // A NATS client watching everything: each message crosses NATS once.
        let watcher = try NATSClient(.init(servers: [nats.url], name: "watcher"))
        try await watcher.waitUntilConnected()
        let onNATS = Collector<String>()
        try await watcher.subscribe(">") { onNATS.add($0.subject) }
        try await watcher.flush()
        for i in 0..<10 { try await onA.publish("t.from-a", "a\(i)") }
        for i in 0..<10 { try await onB.publish("t.from-b", "b\(i)") }
        try await onA.publish("t.end", "end-a")
        try await onB.publish("t.end", "end-b")
        func collect(_ s: Subscription) async throws -> [String] {
            var texts: [String] = []
            for try await e in s {
                texts.append(e.text)
                if texts.contains("end-a") && texts.contains("end-b") { break }
            }
            return texts
        }
        let gotA = try await collect(seenA), gotB = try await collect(seenB)
        try await Task.sleep(for: .milliseconds(300))  // room for any duplicate or echo to show up
        #expect(gotA.sorted() == gotB.sorted() && gotA.count == 22, "a: \(gotA)\nb: \(gotB)")
        #expect(onNATS.count == 22, "\(onNATS.items)")
        for p in [bridgeA, bridgeB] { p.signal(SIGTERM) }
        _ = await bridgeA.waitForExit()
        _ = await bridgeB.waitForExit()
        await watcher.close()
        await onA.close()
        await onB.close()
    }

    /// Messages from a plain NATS client: headers become properties exactly as docs/BRIDGE.md
    /// says, on the fast way in (bytes to bytes) and on the decoding one (bytes that are not
    /// UTF-8); one with a value too long for an evbus string field is refused whole (dropped,
    /// counted, logged), not cut, and the next one arrives.
    @Test func foreignNATSMessagesArriveWithTheirHeadersMapped() async throws {
        let nats = try await NATSServerProcess()
        let b = try await BrokerProcess()
        let bridgeB = try await bridge("b", b, nats, export: [], import: ["in.#"])
        let subscriber = try await Peer.connect(to: b.socketPath, name: "sub")
        let events = try await subscriber.subscribe("in.#")
        let foreign = try NATSClient(.init(servers: [nats.url], name: "foreign"))
        try await foreign.waitUntilConnected()
        let long = String(repeating: "x", count: 65_534) + "é" + String(repeating: "x", count: 4_000)  // é would straddle the limit
        let sent: [NATSHeaders?] = [
            nil,
            NATSHeaders(fields: [
                ("Evbus-Content-Type", "a"), ("X-Other", "v"), ("Evbus-Content-Type", "b"), ("Evbus-Correlation-Id", "c1"),
                ("Evbus-Message-Id", "m1"), ("Evbus-Timestamp", "123"), ("evbus-bridge-origin", "forged"), ("Ünï", "cödé"),
            ]),
            NATSHeaders(fields: [("Evbus-Timestamp", "soon"), ("Evbus-Origin", "elsewhere")]),
            NATSHeaders(fields: [("Long", long), ("Evbus-Message-Id", "m2")]),
        ]
        for (i, h) in sent.enumerated() { try await foreign.publish("evbus.in.m\(i)", Array("p\(i)".utf8), headers: h) }
        let latin1 = Array("NATS/1.0\r\nLatin1: c".utf8) + [0xE9] + Array("\r\n\r\n".utf8)  // a value that is not UTF-8
        let (subject, payload) = (Array("evbus.in.m4".utf8), Array("p4".utf8))
        try subject.withUnsafeBytes { s in
            try latin1.withUnsafeBytes { h in try payload.withUnsafeBytes { try foreign.publishWithoutWaiting(subject: s, headerBlock: h, payload: $0) } }
        }
        var got: [Event] = []
        for try await e in events {
            got.append(e)
            if got.count == 4 { break }
        }
        #expect(got.map(\.topic) == ["in.m0", "in.m1", "in.m2", "in.m4"] && got.map(\.text) == ["p0", "p1", "p2", "p4"])
        var expected = [MessageProperties](repeating: MessageProperties(), count: 4)
        expected[0].headers = [Bridge.Header.imported: "nats"]
        expected[1].contentType = "b"
        expected[1].correlationID = "c1"
        expected[1].messageID = "m1"
        expected[1].timestamp = 123
        expected[1].headers = ["X-Other": "v", "Ünï": "cödé", Bridge.Header.imported: "nats"]
        expected[2].headers = [Bridge.Header.origin: "elsewhere", Bridge.Header.imported: "elsewhere"]
        expected[3].headers = ["Latin1": "c\u{FFFD}", Bridge.Header.imported: "nats"]
        for i in 0..<4 { #expect(got[i].properties == expected[i], "message \(i)") }
        bridgeB.signal(SIGUSR1)
        let counted = await eventually { bridgeB.stderr.contains("imported=4 dropped=1") }
        #expect(counted, "\(bridgeB.stderr)")
        // Every line is logfmt; the refusal says what and why in fields of its own.
        let lines = bridgeB.stderr.split(separator: "\n").map { Logfmt.fields(String($0)) }
        #expect(lines.allSatisfy { $0.count >= 3 && $0[0].0 == "ts" && $0[1] == ("level", "info") && $0[2].0 == "event" }, "\(bridgeB.stderr)")
        let dropped = lines.first { $0.contains { $0 == ("event", "import-dropped") } }
        #expect(dropped?.map(\.0) == ["ts", "level", "event", "topic", "reason"], "\(bridgeB.stderr)")
        #expect(dropped?.last?.1 == #"invalid-argument: header "Long" is 69536 bytes; a property string is at most 65535"#, "\(bridgeB.stderr)")
        #expect(dropped?[3].1 == "in.m3")
        bridgeB.signal(SIGTERM)
        _ = await bridgeB.waitForExit()
        await foreign.close()
        await subscriber.close()
    }

    /// A NATS server that requires a login: the bridge logs in with `nats.user` and
    /// `nats.password` and exports; with a wrong password it says why, and keeps trying.
    @Test func aBridgeLogsInToAServerThatRequiresIt() async throws {
        let nats = try await NATSServerProcess(name: "guarded", arguments: ["--user", "bridge", "--pass", "pa55"])
        let a = try await BrokerProcess()
        var options = NATSClient.Options(servers: [nats.url], name: "watcher")
        (options.user, options.password) = ("bridge", "pa55")
        let watcher = try NATSClient(options)
        try await watcher.waitUntilConnected()
        let onNATS = Collector<String>()
        try await watcher.subscribe("evbus.>") { onNATS.add(String(decoding: $0.payload, as: UTF8.self)) }
        try await watcher.flush()
        let good = try await startBridge("in", socket: a.socketPath, servers: [nats.url], export: ["a.#"], nats: ["user": "bridge", "password": "pa55"])
        let wrong = try await startBridge("out", socket: a.socketPath, servers: [nats.url], export: ["b.#"], nats: ["user": "bridge", "password": "nope"])
        #expect(await eventually { wrong.stderr.contains(#"event=nats-connect-failed server=\#(nats.url) reason="-ERR Authorization Violation""#) }, "\(wrong.stderr)")
        #expect(wrong.stderr.contains(#"event=nats-error server=\#(nats.url) message="Authorization Violation""#), "\(wrong.stderr)")
        #expect(!wrong.stderr.contains("event=nats-connected") && !wrong.stderr.contains("event=nats-disconnected"), "\(wrong.stderr)")
        let p = try await Peer.connect(to: a.socketPath, name: "p")
        try await p.publish("a.one", "through")
        try await p.publish("b.one", "refused")
        #expect(await eventually { onNATS.items == ["through"] }, "\(good.stderr)")
        for b in [good, wrong] { b.signal(SIGTERM) }
        let statusGood = await good.waitForExit(), statusWrong = await wrong.waitForExit()
        #expect(statusGood == 0 && statusWrong == 0)
        await watcher.close()
        await p.close()
    }

    @Test func nothingReachesNATSThatTheExportRulesDoNotAllow() async throws {
        let nats = try await NATSServerProcess()
        let a = try await BrokerProcess()
        let bridgeA = try await bridge("a", a, nats, export: ["public.*", "public.ok", "*.ok"], import: [])  // overlapping: still once
        let watcher = try NATSClient(.init(servers: [nats.url], name: "watcher"))
        try await watcher.waitUntilConnected()
        let onNATS = Collector<String>()
        try await watcher.subscribe(">") { onNATS.add($0.subject) }
        try await watcher.flush()
        let p = try await Peer.connect(to: a.socketPath, name: "p")
        for topic in ["private.x", "public.x.y", "publicity", "public", "secrets.public.x"] { try await p.publish(topic, "no") }
        var unsendable = MessageProperties()
        unsendable.headers = ["note": "two\r\nlines"]  // NATS headers cannot carry a line break
        try await p.publish("public.bad", "no", properties: unsendable)
        try await p.publish("public.ok", "yes")
        #expect(await eventually { onNATS.count >= 1 })
        try await Task.sleep(for: .milliseconds(300))
        #expect(onNATS.items == ["evbus.public.ok"])
        let stats = try await RunningProcess.runEvbus(["rpc", "evbus.bridge.a.stats", "", "--socket", a.socketPath])
        #expect(stats.stdout.contains("exported=1 ") && stats.stdout.contains("dropped=1 "), "\(stats.stdout)")
        #expect(await eventually { bridgeA.stderr.contains("event=export-dropped subject=evbus.public.bad") }, "\(bridgeA.stderr)")
        bridgeA.signal(SIGTERM)
        _ = await bridgeA.waitForExit()
        await watcher.close()
        await p.close()
    }

    /// A publisher's HELLO name and its headers are its own text, and a NATS header block is
    /// lines: neither may add a line of its own (a second `Evbus-Origin`, a forged
    /// `Evbus-Publisher`). A line break in a name is sent as U+FFFD; one in a header value drops
    /// that export, counted and logged.
    @Test func aPublisherCannotAddHeaderLinesThroughItsNameOrItsHeaders() async throws {
        let nats = try await NATSServerProcess()
        let a = try await BrokerProcess()
        let bridgeA = try await bridge("a", a, nats, export: ["public.#"], import: [])
        let watcher = try NATSClient(.init(servers: [nats.url], name: "watcher"))
        try await watcher.waitUntilConnected()
        let onNATS = Collector<NATSMessage>()
        try await watcher.subscribe(">") { onNATS.add($0) }
        try await watcher.flush()
        let forged = "uid=0 gid=0 pid=1 name=root"
        let liar = try await Peer.connect(to: a.socketPath, name: "x\r\nEvbus-Origin: elsewhere\r\nEvbus-Publisher: \(forged)")
        var smuggled = MessageProperties()
        smuggled.headers = ["note": "fine\r\nEvbus-Publisher: \(forged)"]
        try await liar.publish("public.smuggled", "no", properties: smuggled)
        try await liar.publish("public.named", "yes")
        #expect(await eventually { onNATS.count >= 1 })
        try await Task.sleep(for: .milliseconds(300))
        #expect(onNATS.items.map(\.subject) == ["evbus.public.named"])
        let fields = onNATS.items.first?.headers?.fields ?? []
        #expect(fields.filter { $0.name == Bridge.Header.origin }.map(\.value) == ["a"], "\(fields)")
        let identity = fields.filter { $0.name == Bridge.Header.publisher }.map(\.value)
        #expect(identity.count == 1 && RemotePublisher(headerValue: identity[0])?.pid == UInt32(getpid()), "\(fields)")
        #expect(RemotePublisher(headerValue: identity.first ?? "")?.name == "x\u{FFFD}\u{FFFD}Evbus-Origin: elsewhere\u{FFFD}\u{FFFD}Evbus-Publisher: \(forged)")
        let stats = try await RunningProcess.runEvbus(["rpc", "evbus.bridge.a.stats", "", "--socket", a.socketPath])
        #expect(stats.stdout.contains("exported=1 ") && stats.stdout.contains("dropped=1 "), "\(stats.stdout)")
        #expect(await eventually { bridgeA.stderr.contains("event=export-dropped subject=evbus.public.smuggled") }, "\(bridgeA.stderr)")
        bridgeA.signal(SIGTERM)
        _ = await bridgeA.waitForExit()
        await watcher.close()
        await liar.close()
    }

    @Test func configsAreCheckedAndBadOnesRefusedWithTheKeyPath() async throws {
        let example = try BridgeConfig.load(file: Self.root.appendingPathComponent("Configs/bridge.json").path)
        #expect(example.exports.map(\.subject) == ["evbus.sensors.>", "evbus.robot.*.status"])
        #expect(example.imports.map(\.subject) == ["evbus.commands.robot-1.>", "evbus.fleet.broadcast"])
        #expect(example.outage == .buffer && example.nats.servers.count == 2)
        #expect(example.exportServices.map(\.subject) == ["svc.robot-1.status"] && example.importServices.map(\.queue) == ["fleet.planner"])
        #expect(example.durableExports.map(\.stream) == ["TELEMETRY"])
        #expect(example.nats.pingInterval == .seconds(60) && example.nats.maxPingsOutstanding == 3 && example.nats.connectTimeout == .seconds(2))
        let cases: [(String, String)] = [
            (#"{"name": "x", "nats": {"servers": ["nats://h:1"]}, "export": ["a.#.b"]}"#, "export[0]"),
            (#"{"name": "x", "nats": {"servers": ["nats://h:1"]}, "export": ["a"], "colour": 1}"#, "colour"),
            (#"{"name": "x", "nats": {"servers": ["http://h"]}, "export": ["a"]}"#, "nats.servers[0]"),
            (#"{"nats": {"servers": ["nats://h:1"]}, "export": ["a"]}"#, "name"),
            (#"{"name": "x", "nats": {"servers": ["nats://h:1"]}}"#, "export"),
            (#"{"name": "x", "nats": {"servers": ["nats://h:1"]}, "export": ["a"], "outage": {"mode": "pray"}}"#, "outage.mode"),
            (#"{"name": "x", "nats": {"servers": ["nats://h:1"]}, "import": ["a"], "prefix": "e.*"}"#, "prefix"),
            (#"{"name": "x", "nats": {"servers": ["nats://h:1"]}, "services": {"export": [{"queue": "q", "subject": "a.*"}]}}"#, "services.export[0].subject"),
            (#"{"name": "x", "nats": {"servers": ["nats://h:1"]}, "services": {"import": [{"subject": "s"}]}}"#, "services.import[0].queue"),
            (#"{"name": "x", "nats": {"servers": ["nats://h:1"]}, "jetstream": [{"queue": "q", "stream": "A.B", "subject": "s"}]}"#, "jetstream[0].stream"),
            (#"{"name": "x", "nats": {"servers": ["nats://h:1"], "pingIntervalMillis": 0}, "export": ["a"]}"#, "nats.pingIntervalMillis"),
            (#"{"name": "x", "nats": {"servers": ["nats://h:1"], "maxPingsOutstanding": "2"}, "export": ["a"]}"#, "nats.maxPingsOutstanding"),
            (#"{"name": "x", "nats": {"servers": ["nats://h:1"], "connectTimeoutMillis": -5}, "export": ["a"]}"#, "nats.connectTimeoutMillis"),
            (#"{"name": "x", "nats": {"servers": ["nats://h:1"], "pingEvery": 5}, "export": ["a"]}"#, "nats.pingEvery"),
            (#"{"name": "x", "nats": {"servers": ["nats://h:1"], "password": "p"}, "export": ["a"]}"#, "nats.password"),
            (#"{"name": "x", "nats": {"servers": ["nats://h:1"], "user": "u", "token": "t"}, "export": ["a"]}"#, "nats.token"),
            (#"{"name": "x", "nats": {"servers": ["nats://h:1"], "user": ""}, "export": ["a"]}"#, "nats.user"),
        ]
        for (json, key) in cases {
            #expect { _ = try BridgeConfig.parse(Data(json.utf8)) } throws: { ($0 as? BridgeConfigError)?.keyPath == key }
            let file = TestPaths.dataDirectory("badbridge") + ".json"
            try json.write(toFile: file, atomically: true, encoding: .utf8)
            let run = try await RunningProcess.runEvbus(["bridge", "--config", file])
            #expect(run.status == 78 && run.stderr.contains(key + ":"), "\(run.stderr)")
            unlink(file)
        }
    }

    @Test func requestsReachAResponderOnTheOtherMachineAndBack() async throws {
        let nats = try await NATSServerProcess()
        let a = try await BrokerProcess(), b = try await BrokerProcess()
        let bridgeA = try await bridge("a", a, nats, export: [], import: [], services: ["export": [["queue": "pricing", "subject": "svc.pricing"]]])
        let bridgeB = try await bridge("b", b, nats, export: [], import: [], services: ["import": [["subject": "svc.pricing", "queue": "pricing"]], "timeoutMillis": 5000])
        let shop = try await Peer.connect(to: a.socketPath, name: "shop")
        let responder = try await shop.respond(on: "pricing") { (r: Request) throws -> [UInt8] in
            if r.text == "sku-0" { throw RemoteError("out-of-stock", "sku-0 is sold out") }
            return Array("price of \(r.text) in \(r.headers["currency"] ?? "?")".utf8)
        }
        let caller = try await Peer.connect(to: b.socketPath, name: "caller")
        #expect(try await caller.request(to: .queue("pricing"), "sku-1", headers: ["currency": "EUR"], timeout: .seconds(30)).text == "price of sku-1 in EUR")
        await #expect { _ = try await caller.request(to: .queue("pricing"), "sku-0", timeout: .seconds(30)) } throws: {
            ($0 as? EvbusError)?.code == .remote && ($0 as? EvbusError)?.remoteCode == "out-of-stock" && "\($0)".contains("sold out")
        }
        // No responder on machine A's queue, then no bridge serving the subject at all: both "no-responder".
        try await responder.cancel()
        await #expect { _ = try await caller.request(to: .queue("pricing"), "sku-2", timeout: .seconds(30)) } throws: {
            ($0 as? EvbusError)?.remoteCode == "no-responder"
        }
        bridgeA.signal(SIGTERM)
        _ = await bridgeA.waitForExit()
        await #expect { _ = try await caller.request(to: .queue("pricing"), "sku-3", timeout: .seconds(30)) } throws: {
            ($0 as? EvbusError)?.remoteCode == "no-responder" && "\($0)".contains("svc.pricing")
        }
        bridgeB.signal(SIGTERM)
        _ = await bridgeB.waitForExit()
        await caller.close()
        await shop.close()
    }

    /// A stream may set its own limit on a message's size (`max_msg_size`): a message over it
    /// is refused by JetStream every time, so it is dead-lettered like one over `max_payload`,
    /// while a refusal that may pass later is retried.
    @Test func aMessageOverTheStreamsOwnLimitIsDeadLetteredNotRetriedForEver() async throws {
        let store = TestPaths.dataDirectory("jetstream-max-msg")
        let nats = try await NATSServerProcess(jetStreamDirectory: store)
        try await createStream(nats, #"{"name":"AUDIT","subjects":["evbus.audit"],"storage":"file","max_msg_size":100}"#)
        let a = try await BrokerProcess()
        let p = try await Peer.connect(to: a.socketPath, name: "auditor")
        try await declareDeadLettering("audit", on: p)
        let js: [[String: String]] = [["queue": "audit", "stream": "AUDIT", "subject": "evbus.audit"]]
        let bridgeA = try await bridge("a", a, nats, export: [], import: [], jetstream: js)
        let big = Array("long entry ".utf8) + [UInt8](repeating: 0x61, count: 500)
        for payload in [Array("entry 1".utf8), big, Array("entry 2".utf8)] {
            try await p.publish(to: "", key: "audit", payload, confirm: true, persistent: true)
        }
        #expect(await eventually(30) { (try? await streamMessages(nats, "AUDIT")) == 2 }, "\(bridgeA.stderr.suffix(2000))")
        #expect(try await streamPayloads(nats, "AUDIT", count: 2) == ["entry 1", "entry 2"])
        let dead = try await take(1, from: try await p.consume("audit.dead", ack: .auto))
        #expect(dead[0].payload == big)
        #expect(await eventually { (try? await p.topology().queues.first { $0.name == "audit" }).map { $0.ready + $0.unacked } == 0 })
        #expect(await eventually { bridgeA.stderr.contains("event=jetstream-export-refused queue=audit reason=\"payload-too-large: JetStream refuses it") }, "\(bridgeA.stderr)")
        #expect(occurrences("event=jetstream-export-refused", in: bridgeA.stderr) == 1)
        bridgeA.signal(SIGTERM)
        _ = await bridgeA.waitForExit()
        await p.close()
        try? FileManager.default.removeItem(atPath: store)
    }

    /// A stream that refuses for a while (here: full, `discard: new`) costs a few tries, not one
    /// per message every 200 ms: the wait before a refused message goes back to its queue
    /// doubles while JetStream keeps refusing. Nothing is lost meanwhile.
    @Test func aStreamThatKeepsRefusingIsTriedLessAndLessOften() async throws {
        let store = TestPaths.dataDirectory("jetstream-full")
        let nats = try await NATSServerProcess(jetStreamDirectory: store)
        try await createStream(nats, #"{"name":"FULL","subjects":["evbus.jobs"],"storage":"file","max_msgs":1,"discard":"new"}"#)
        let a = try await BrokerProcess()
        let p = try await Peer.connect(to: a.socketPath, name: "producer")
        _ = try await p.declareQueue("jobs", QueueOptions(durable: true))
        let js: [[String: String]] = [["queue": "jobs", "stream": "FULL", "subject": "evbus.jobs"]]
        let bridgeA = try await bridge("a", a, nats, export: [], import: [], jetstream: js)
        for i in 0..<3 { try await p.publish(to: "", key: "jobs", Array("job \(i)".utf8), confirm: true, persistent: true) }
        #expect(await eventually(30) { (try? await streamMessages(nats, "FULL")) == 1 })
        let start = ContinuousClock.now
        try await Task.sleep(for: .seconds(3))
        let seconds = (ContinuousClock.now - start) / .seconds(1)
        let queue = try #require(try await p.topology().queues.first { $0.name == "jobs" })
        // Two refused messages, tried every 200 ms, would be delivered 30 times in 3 s.
        #expect(queue.delivered <= 3 + 2 * UInt64(seconds.rounded(.up)), "\(queue.delivered) deliveries in \(seconds) s")
        #expect(queue.ready + queue.unacked == 2)
        bridgeA.signal(SIGTERM)
        _ = await bridgeA.waitForExit()
        await p.close()
        try? FileManager.default.removeItem(atPath: store)
    }

    /// A request or a reply larger than NATS's `max_payload` fails the call with that reason,
    /// at once, instead of closing the bridge's NATS connection or leaving the caller to time out.
    @Test func aCallNATSCannotCarryFailsWithTheReasonEitherWay() async throws {
        let config = TestPaths.file("bridge-rpc-max-payload", ".conf")
        try "max_payload: 2048\n".write(toFile: config, atomically: true, encoding: .utf8)
        let nats = try await NATSServerProcess(arguments: ["-c", config])
        let a = try await BrokerProcess(), b = try await BrokerProcess()
        let bridgeA = try await bridge("a", a, nats, export: [], import: [], services: ["export": [["queue": "files", "subject": "svc.files"]]])
        let bridgeB = try await bridge("b", b, nats, export: [], import: [], services: ["import": [["subject": "svc.files", "queue": "files"]], "timeoutMillis": 20000])
        let server = try await Peer.connect(to: a.socketPath, name: "files")
        _ = try await server.respond(on: "files") { (r: Request) throws -> [UInt8] in
            r.text == "big" ? [UInt8](repeating: 0x61, count: 4000) : Array("got \(r.payload.count) bytes".utf8)
        }
        let caller = try await Peer.connect(to: b.socketPath, name: "caller")
        #expect(try await caller.request(to: .queue("files"), "small", timeout: .seconds(30)).text == "got 5 bytes")
        // Not "timeout": neither waits for the service timeout.
        await #expect { _ = try await caller.request(to: .queue("files"), [UInt8](repeating: 1, count: 4000), timeout: .seconds(30)) } throws: {
            ($0 as? EvbusError)?.remoteCode == "payload-too-large" && "\($0)".contains("max_payload")
        }
        await #expect { _ = try await caller.request(to: .queue("files"), "big", timeout: .seconds(30)) } throws: {
            ($0 as? EvbusError)?.remoteCode == "payload-too-large"
        }
        #expect(try await caller.request(to: .queue("files"), "after", timeout: .seconds(30)).text == "got 5 bytes")
        // Logged after the error reply went out: the caller may hear before the log is read.
        #expect(await eventually { bridgeA.stderr.contains("event=service-reply-lost queue=files") }, "\(bridgeA.stderr)")
        #expect(!bridgeA.stderr.contains("nats-disconnected") && !bridgeB.stderr.contains("nats-disconnected"))
        for bridge in [bridgeA, bridgeB] { bridge.signal(SIGTERM) }
        _ = await bridgeA.waitForExit()
        _ = await bridgeB.waitForExit()
        await caller.close()
        await server.close()
    }

    /// A durable queue `queue` whose refused messages go to the durable queue `<queue>.dead`
    /// (through the fanout exchange `dlx`).
    func declareDeadLettering(_ queue: String, on p: Peer) async throws {
        try await p.declareExchange("dlx", kind: .fanout, durable: true)
        _ = try await p.declareQueue("\(queue).dead", QueueOptions(durable: true))
        try await p.bind(queue: "\(queue).dead", exchange: "dlx")
        _ = try await p.declareQueue(queue, QueueOptions(deadLetterExchange: "dlx", durable: true))
    }

    /// Makes a JetStream stream as an operator would, before the bridge starts (`config` is
    /// the stream's JSON, its name included).
    func createStream(_ nats: NATSServerProcess, _ config: String) async throws {
        let setup = try NATSClient(.init(servers: [nats.url], name: "setup"))
        defer { Task { await setup.close() } }
        try await setup.waitUntilConnected()
        let name = try #require((try JSONSerialization.jsonObject(with: Data(config.utf8)) as? [String: Any])?["name"] as? String)
        let created = try await setup.request("$JS.API.STREAM.CREATE.\(name)", Array(config.utf8), timeout: .seconds(5))
        #expect(!String(decoding: created.payload, as: UTF8.self).contains("error"), "\(String(decoding: created.payload, as: UTF8.self))")
    }

    /// Messages in a JetStream stream, as its server says.
    func streamMessages(_ nats: NATSServerProcess, _ stream: String) async throws -> Int {
        let c = try NATSClient(.init(servers: [nats.url], name: "js-probe"))
        defer { Task { await c.close() } }
        try await c.waitUntilConnected()
        let reply = try await c.request("$JS.API.STREAM.INFO.\(stream)", [], timeout: .seconds(5))
        let info = try JSONSerialization.jsonObject(with: Data(reply.payload)) as? [String: Any]
        return (info?["state"] as? [String: Any])?["messages"] as? Int ?? -1
    }

    /// A message larger than the NATS server's `max_payload` would, sent, get the bridge's
    /// connection closed (and, from a durable queue, be retried for ever). A topic export is
    /// dropped, counted and logged; a durable one is refused to its queue's dead-letter
    /// exchange; the messages around them go through on the same connection.
    @Test func aMessageOverNATSMaxPayloadIsDroppedOrDeadLetteredAndTheRestGoThrough() async throws {
        let config = TestPaths.file("bridge-max-payload", ".conf")
        try "max_payload: 2048\n".write(toFile: config, atomically: true, encoding: .utf8)
        let store = TestPaths.dataDirectory("jetstream-max-payload")
        let nats = try await NATSServerProcess(jetStreamDirectory: store, arguments: ["-c", config])
        let a = try await BrokerProcess()
        let p = try await Peer.connect(to: a.socketPath, name: "producer")
        try await declareDeadLettering("orders", on: p)
        let js: [[String: String]] = [["queue": "orders", "stream": "ORDERS", "subject": "evbus.orders"]]
        let bridgeA = try await bridge("a", a, nats, export: ["news.#"], import: [], jetstream: js)
        let watcher = try NATSClient(.init(servers: [nats.url], name: "watcher"))
        try await watcher.waitUntilConnected()
        let onNATS = Collector<String>()
        try await watcher.subscribe("evbus.news.>") { onNATS.add(String(decoding: $0.payload.prefix(5), as: UTF8.self)) }
        try await watcher.flush()
        let big = Array("big: ".utf8) + [UInt8](repeating: 0x61, count: 4000)
        for (i, payload) in [Array("small".utf8), big, Array("after".utf8)].enumerated() {
            try await p.publish("news.today", payload)
            try await p.publish(to: "", key: "orders", payload, properties: MessageProperties(messageID: "o-\(i)"), confirm: true, persistent: true)
        }
        #expect(await eventually { onNATS.items == ["small", "after"] }, "\(onNATS.items) \(bridgeA.stderr)")
        #expect(await eventually(30) { (try? await streamMessages(nats, "ORDERS")) == 2 }, "\(bridgeA.stderr.suffix(2000))")
        let dead = try await take(1, from: try await p.consume("orders.dead", ack: .auto))
        #expect(dead[0].payload == big && dead[0].properties.headers["x-death-reason"] == "rejected")
        #expect(await eventually { (try? await p.topology().queues.first { $0.name == "orders" }).map { $0.ready + $0.unacked } == 0 })
        let stats = try await RunningProcess.runEvbus(["rpc", "evbus.bridge.a.stats", "", "--socket", a.socketPath])
        #expect(stats.stdout.contains("exported=4 ") && stats.stdout.contains("dropped=2 ") && stats.stdout.contains("nats_reconnects=0 "), "\(stats.stdout)")
        #expect(await eventually { bridgeA.stderr.contains("event=export-dropped subject=evbus.news.today reason=\"payload-too-large") }, "\(bridgeA.stderr)")
        #expect(await eventually { bridgeA.stderr.contains("event=jetstream-export-refused queue=orders reason=\"payload-too-large") }, "\(bridgeA.stderr)")
        bridgeA.signal(SIGTERM)
        _ = await bridgeA.waitForExit()
        await watcher.close()
        await p.close()
        try? FileManager.default.removeItem(atPath: store)
    }

    /// The payloads of a JetStream stream's messages, by sequence, as its server says.
    func streamPayloads(_ nats: NATSServerProcess, _ stream: String, count: Int) async throws -> [String] {
        let c = try NATSClient(.init(servers: [nats.url], name: "js-reader"))
        defer { Task { await c.close() } }
        try await c.waitUntilConnected()
        var payloads: [String] = []
        for seq in 1...count {
            let reply = try await c.request("$JS.API.STREAM.MSG.GET.\(stream)", Array(#"{"seq":\#(seq)}"#.utf8), timeout: .seconds(5))
            let message = (try JSONSerialization.jsonObject(with: Data(reply.payload)) as? [String: Any])?["message"] as? [String: Any]
            let data = (message?["data"] as? String).flatMap { Data(base64Encoded: $0) } ?? Data()
            payloads.append(String(decoding: data, as: UTF8.self))
        }
        return payloads
    }

    /// With nothing failing, the stream holds the queue's messages in the queue's order.
    @Test func aDurableQueueReachesItsStreamInOrder() async throws {
        let store = TestPaths.dataDirectory("jetstream-order")
        let nats = try await NATSServerProcess(jetStreamDirectory: store)
        let a = try await BrokerProcess()
        let producer = try await Peer.connect(to: a.socketPath, name: "producer")
        _ = try await producer.declareQueue("ledger", QueueOptions(durable: true))
        let js: [[String: String]] = [["queue": "ledger", "stream": "LEDGER", "subject": "evbus.ledger"]]
        let bridgeA = try await bridge("a", a, nats, export: [], import: [], jetstream: js)
        let count = 300
        for i in 0..<count { try await producer.publish(to: "", key: "ledger", Array("entry \(i)".utf8), confirm: true, persistent: true) }
        #expect(await eventually(60) { (try? await streamMessages(nats, "LEDGER")) == count })
        let stored = try await streamPayloads(nats, "LEDGER", count: count)
        #expect(stored == (0..<count).map { "entry \($0)" }, "\(stored.prefix(20))")
        bridgeA.signal(SIGTERM)
        _ = await bridgeA.waitForExit()
        await producer.close()
        try? FileManager.default.removeItem(atPath: store)
    }

    @Test func aDurableQueueExportedToJetStreamLosesNothingWhenTheBridgeAndNATSDie() async throws {
        let store = TestPaths.dataDirectory("jetstream")
        var nats = try await NATSServerProcess(jetStreamDirectory: store)
        let a = try await BrokerProcess()
        let producer = try await Peer.connect(to: a.socketPath, name: "producer")
        _ = try await producer.declareQueue("orders", QueueOptions(durable: true))
        let js: [[String: String]] = [["queue": "orders", "stream": "ORDERS", "subject": "evbus.orders"]]
        var bridgeA = try await bridge("a", a, nats, export: [], import: [], jetstream: js)
        func publish(_ range: Range<Int>) async throws {
            for i in range {
                var p = MessageProperties()
                p.messageID = "order-\(i)"
                try await producer.publish(to: "", key: "orders", Array("order \(i)".utf8), properties: p, confirm: true, persistent: true)
            }
        }
        try await publish(0..<50)
        #expect(await eventually(60) { (try? await streamMessages(nats, "ORDERS")) == 50 })
        // Mid-stream: the NATS node dies, 50 more are published (the bridge holds some, fails
        // to store them and puts them back), then the bridge dies too; both come back.
        let port = nats.port
        await nats.kill()
        try await publish(50..<100)
        #expect(await eventually { (try? await producer.topology().queues.first { $0.name == "orders" }?.unacked ?? 0) ?? 0 > 0 })
        bridgeA.signal(SIGKILL)
        _ = await bridgeA.waitForExit()
        nats = try await NATSServerProcess(port: port, jetStreamDirectory: store)
        bridgeA = try await bridge("a", a, nats, export: [], import: [], jetstream: js)
        #expect(await eventually(60) { (try? await streamMessages(nats, "ORDERS")) == 100 }, "\(bridgeA.stderr.suffix(2000))")
        #expect(await eventually { (try? await producer.topology().queues.first { $0.name == "orders" }).map { $0.ready + $0.unacked } == 0 })
        bridgeA.signal(SIGTERM)
        _ = await bridgeA.waitForExit()
        await producer.close()
        try? FileManager.default.removeItem(atPath: store)
    }
}
