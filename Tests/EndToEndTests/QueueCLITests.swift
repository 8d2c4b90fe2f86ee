import Evbus
import EvbusIO
import EvbusTestSupport
import Foundation
import Testing

/// Waits until queue `name` has `consumers` consumers (so a `consume` process is ready).
func waitForConsumers(_ consumers: UInt32, on name: String, at socket: String) async throws -> Bool {
    let probe = try await Peer.connect(to: socket, name: "probe")
    defer { Task { await probe.close() } }
    return await eventually {
        let queues = (try? await probe.topology().queues) ?? []
        return queues.first { $0.name == name }?.consumers == consumers
    }
}

/// Waits until exchange `name` has `n` bindings (private queues of `consume --exchange` are bound).
func waitForBindings(_ n: Int, on name: String, at socket: String) async throws -> Bool {
    let probe = try await Peer.connect(to: socket, name: "probe")
    defer { Task { await probe.close() } }
    return await eventually {
        let exchanges = (try? await probe.topology().exchanges) ?? []
        return exchanges.first { $0.name == name }?.bindings.count == n
    }
}

/// RabbitMQ's tutorials with the `evbus` binary alone, and the queue rules a shell user meets.
@Suite struct QueueCLITests {
    func evbus(_ args: [String], _ broker: BrokerProcess, stdin: String? = nil) async throws -> (status: Int32, stdout: String, stderr: String) {
        try await RunningProcess.runEvbus(args + ["--socket", broker.socketPath], stdin: stdin)
    }

    @Test func helloWorldAndWorkQueues() async throws {
        let broker = try await BrokerProcess()
        #expect(try await evbus(["declare", "queue", "hello"], broker).stdout == "hello\n")
        #expect(try await evbus(["pub", "--exchange", "", "--key", "hello", "Hello World!"], broker).status == 0)
        let hello = try await evbus(["consume", "hello", "--count", "1"], broker)
        #expect(hello.status == 0 && hello.stdout == "hello\tHello World!\n", "\(hello.stderr)")

        _ = try await evbus(["declare", "queue", "task_queue"], broker)
        let workers = try (0..<2).map { _ in
            try RunningProcess.evbus(["consume", "task_queue", "--prefetch", "1", "--count", "3", "--socket", broker.socketPath])
        }
        #expect(try await waitForConsumers(2, on: "task_queue", at: broker.socketPath))
        let tasks = (1...6).map { "task \($0)" }.joined(separator: "\n") + "\n"
        #expect(try await evbus(["pub", "--exchange", "", "--key", "task_queue", "--confirm"], broker, stdin: tasks).status == 0)
        for w in workers { #expect(await w.waitForExit() == 0) }
        let got = workers.flatMap(\.stdoutLines).map { $0.replacingOccurrences(of: "task_queue\t", with: "") }
        #expect(Set(got) == Set((1...6).map { "task \($0)" }) && got.count == 6)
        await broker.stop()
    }

    @Test func fanoutDirectAndTopicExchanges() async throws {
        let broker = try await BrokerProcess()
        let s = broker.socketPath
        _ = try await evbus(["declare", "exchange", "logs", "--type", "fanout"], broker)
        _ = try await evbus(["declare", "exchange", "direct_logs", "--type", "direct"], broker)
        _ = try await evbus(["declare", "exchange", "topic_logs", "--type", "topic"], broker)
        let fan = try RunningProcess.evbus(["consume", "--exchange", "logs", "--count", "1", "--socket", s])
        let errors = try RunningProcess.evbus(["consume", "--exchange", "direct_logs", "--key", "error", "--count", "1", "--socket", s])
        let kern = try RunningProcess.evbus(["consume", "--exchange", "topic_logs", "--key", "kern.*", "--key", "*.critical", "--count", "2", "--socket", s])
        #expect(try await waitForBindings(1, on: "logs", at: s))
        #expect(try await waitForBindings(1, on: "direct_logs", at: s))
        #expect(try await waitForBindings(2, on: "topic_logs", at: s))
        _ = try await evbus(["pub", "--exchange", "logs", "--key", "", "info: Hello World!"], broker)
        _ = try await evbus(["pub", "--exchange", "direct_logs", "--key", "info", "just info"], broker)
        _ = try await evbus(["pub", "--exchange", "direct_logs", "--key", "error", "Run. Run. Or it will explode."], broker)
        _ = try await evbus(["pub", "--exchange", "topic_logs", "--key", "cron.info", "skip me"], broker)
        _ = try await evbus(["pub", "--exchange", "topic_logs", "--key", "kern.critical", "A critical kernel error"], broker)
        _ = try await evbus(["pub", "--exchange", "topic_logs", "--key", "app.critical", "app down"], broker)
        for p in [fan, errors, kern] { #expect(await p.waitForExit() == 0) }
        #expect(fan.stdoutLines == ["\tinfo: Hello World!"])
        #expect(errors.stdoutLines == ["error\tRun. Run. Or it will explode."])
        #expect(kern.stdoutLines == ["kern.critical\tA critical kernel error", "app.critical\tapp down"])
        // Their private queues went with them.
        #expect(try await waitForBindings(0, on: "topic_logs", at: s))
        await broker.stop()
    }

    @Test func aKilledConsumersUnackedMessagesAreAllRedelivered() async throws {
        let broker = try await BrokerProcess()
        let s = broker.socketPath
        let producer = try await Peer.connect(to: s, name: "producer")
        _ = try await producer.declareQueue("jobs")
        for i in 0..<100 { try await producer.publish(to: "", key: "jobs", "job-\(i)", confirm: true) }
        try await producer.waitForConfirms()
        // This consumer takes 30 and never acknowledges them; then it dies without a word.
        let holder = try RunningProcess.evbus(["consume", "jobs", "--ack", "none", "--prefetch", "30", "--socket", s])
        #expect(await eventually { holder.stdoutLines.count == 30 })
        holder.signal(SIGKILL)
        _ = await holder.waitForExit()
        let rescuer = try await producer.consume("jobs", ack: .manual)
        var seen: [String: Bool] = [:]
        var order: [String] = []
        for try await d in rescuer {
            #expect(seen[d.text] == nil, "duplicate \(d.text)")
            seen[d.text] = d.redelivered
            order.append(d.text)
            try d.ack()
            if seen.count == 100 { break }
        }
        #expect(Set(seen.keys) == Set((0..<100).map { "job-\($0)" }))
        #expect(seen.filter(\.value).count == 30)
        #expect(order == (0..<100).map { "job-\($0)" })  // back at the head, in their original order
        await producer.close()
        await broker.stop()
    }

    @Test func statsShowsExchangesAndQueues() async throws {
        let broker = try await BrokerProcess()
        _ = try await evbus(["declare", "exchange", "events", "--type", "topic"], broker)
        _ = try await evbus(["declare", "queue", "audit", "--max-length", "5", "--overflow", "reject-publish"], broker)
        _ = try await evbus(["bind", "audit", "events", "user.#"], broker)
        _ = try await evbus(["pub", "--exchange", "events", "--key", "user.login", "alice", "--confirm"], broker)
        let table = try await evbus(["stats"], broker)
        #expect(table.stdout.contains("events      topic   audit <- user.#"), "\(table.stdout)")
        #expect(table.stdout.contains("QUEUE  READY  UNACKED  CONSUMERS"))
        #expect(table.stdout.contains("audit  1      0        0"))
        let json = try await evbus(["stats", "--json"], broker)
        let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as! [String: Any]
        let queues = object["queues"] as! [[String: Any]]
        #expect(queues.first?["name"] as? String == "audit" && queues.first?["ready"] as? Int == 1)
        #expect((object["published"] as? Int) == 1)
        #expect(try await evbus(["unbind", "audit", "events", "user.#"], broker).status == 0)
        #expect(try await evbus(["purge", "audit"], broker).stdout == "purged 1 messages from audit\n")
        #expect(try await evbus(["delete", "queue", "audit"], broker).stdout == "deleted queue audit (0 messages)\n")
        #expect(try await evbus(["delete", "exchange", "events"], broker).status == 0)
        await broker.stop()
    }

    @Test func consumeJSONAndBrokerNamedQueues() async throws {
        let broker = try await BrokerProcess()
        let named = try await evbus(["declare", "queue"], broker)
        #expect(named.status == 0 && named.stdout.hasPrefix("amq.gen-"), "\(named.stdout)")
        _ = try await evbus(["declare", "queue", "inbox-test"], broker)
        _ = try await evbus(["pub", "--exchange", "", "--key", "inbox-test", "--header", "tenant=a", "{\"n\":1}"], broker)
        let r = try await evbus(["consume", "inbox-test", "--count", "1", "--json"], broker)
        #expect(r.status == 0, "\(r.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        #expect(object["payload"] as? String == "{\"n\":1}")
        #expect(object["routing_key"] as? String == "inbox-test" && object["exchange"] as? String == "")
        #expect(object["redelivered"] as? Bool == false && (object["delivery_tag"] as? Int ?? 0) > 0)
        #expect((object["headers"] as? [String: String]) == ["tenant": "a"])
        // --ack none puts it back: the next look sees it again, flagged.
        _ = try await evbus(["pub", "--exchange", "", "--key", "inbox-test", "again"], broker)
        _ = try await evbus(["consume", "inbox-test", "--count", "1", "--ack", "none"], broker)
        let again = try await evbus(["consume", "inbox-test", "--count", "1", "--json"], broker)
        let second = try JSONSerialization.jsonObject(with: Data(again.stdout.utf8)) as! [String: Any]
        #expect(second["payload"] as? String == "again" && second["redelivered"] as? Bool == true)
        await broker.stop()
    }

    @Test func refusalsExitNonZeroWithTheReason() async throws {
        let broker = try await BrokerProcess()
        _ = try await evbus(["declare", "exchange", "logs", "--type", "fanout"], broker)
        let conflict = try await evbus(["declare", "exchange", "logs", "--type", "topic"], broker)
        #expect(conflict.status == 1 && conflict.stderr.contains("exists with kind fanout"))
        let unknown = try await evbus(["bind", "nope", "logs"], broker)
        #expect(unknown.status == 1 && unknown.stderr.contains("no queue named \"nope\""))
        let noExchange = try await evbus(["pub", "--exchange", "missing", "--key", "k", "x", "--confirm"], broker)
        #expect(noExchange.status == 1 && noExchange.stderr.contains("no exchange named \"missing\""))
        let returned = try await evbus(["pub", "--exchange", "logs", "--key", "", "--mandatory", "x"], broker)
        #expect(returned.status == 1 && returned.stderr.contains("reached no queue"))
        _ = try await evbus(["declare", "queue", "tiny", "--max-length", "1", "--overflow", "reject-publish"], broker)
        let full = try await evbus(["pub", "--exchange", "", "--key", "tiny", "--confirm"], broker, stdin: "a\nb\n")
        #expect(full.status == 1 && full.stderr.contains("queue \"tiny\" is full"))
        let missingQueue = try await evbus(["consume", "ghost", "--count", "1"], broker)
        #expect(missingQueue.status == 1 && missingQueue.stderr.contains("no queue named \"ghost\""))
        // Misuse is caught before connecting: exit 64 with the usage line.
        for args in [
            ["declare", "exchange", "x"], ["declare", "exchange", "x", "--type", "headers"], ["declare", "table", "x"],
            ["declare", "queue", "q", "--overflow", "sometimes"], ["declare", "queue", "q", "--type", "fanout"],
            ["consume"], ["consume", "q", "--ack", "maybe"], ["consume", "q", "--exchange", "x"], ["pub", "--exchange", "x", "m"],
            ["pub", "t", "m", "--confirm"], ["delete", "exchange", "x", "--if-empty"], ["bind", "q"],
            ["pub", "--exchange", "", "--key", "q", "--header", "novalue", "m"], ["pub", "t", "m", "--key", "k"],
            ["pub", "--exchange", "", "--key", "q", "--expiration", "-5", "m"], ["consume", "--key", "k"],
            ["consume", "q", "--prefetch", "70000"], ["delete", "queue"], ["purge"], ["unbind", "q"],
            ["declare", "queue", "q", "--max-length", "many"],
        ] {
            let r = try await evbus(args, broker)
            #expect(r.status == 64, "\(args): \(r.stderr)")
            #expect(r.stderr.contains("Usage: evbus"), "\(args)")
        }
        await broker.stop()
    }
}
