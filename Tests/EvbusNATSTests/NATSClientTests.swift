import EvbusNATS
import EvbusTestSupport
import Foundation
import Testing

/// The NATS client against real `nats-server` processes.
@Suite struct NATSClientTests {
    func client(
        _ urls: [String], name: String = "test", events: Collector<NATSClient.Event>? = nil, tune: (inout NATSClient.Options) -> Void = { _ in }
    ) async throws -> NATSClient {
        var options = NATSClient.Options(servers: urls, name: name)
        if let events { options.onEvent = { events.add($0) } }
        tune(&options)
        let c = try NATSClient(options)
        try await c.waitUntilConnected()
        return c
    }

    @Test func messagesWithHeadersArriveInOrder() async throws {
        let server = try await NATSServerProcess()
        let sub = try await client([server.url], name: "sub")
        let pub = try await client([server.url], name: "pub")
        let got = Collector<NATSMessage>()
        try await sub.subscribe("sensors.>") { got.add($0) }
        try await sub.flush()
        for i in 0..<100 {
            try await pub.publish("sensors.kitchen.temp", Array("\(i)".utf8), headers: i % 2 == 0 ? NATSHeaders(fields: [("X-Seq", "\(i)")]) : nil)
        }
        try await pub.flush()
        #expect(await eventually { got.count == 100 })
        #expect(got.items.map { String(decoding: $0.payload, as: UTF8.self) } == (0..<100).map(String.init))
        #expect(got.items[4].headers?["x-seq"] == "4" && got.items[5].headers == nil && got.items[0].subject == "sensors.kitchen.temp")
        await sub.close()
        await pub.close()
    }

    /// A server with a smaller `max_payload` than the message: sent, it would get
    /// `-ERR 'Maximum Payload Violation'` and the connection closed. The client refuses it
    /// (every way of publishing, and a request) and the connection carries on.
    @Test func aMessageOverTheServersMaxPayloadIsRefusedAndTheConnectionKept() async throws {
        let config = TestPaths.file("max-payload", ".conf")
        try "max_payload: 1024\n".write(toFile: config, atomically: true, encoding: .utf8)
        let server = try await NATSServerProcess(arguments: ["-c", config])
        let events = Collector<NATSClient.Event>()
        let c = try await client([server.url], events: events)
        let got = Collector<Int>()
        try await c.subscribe("big") { got.add($0.payload.count) }
        let headers = NATSHeaders(fields: [("A", "b")])
        let block = try headers.encoded()  // counted in max_payload, as the server counts it
        let tooLarge: (any Error) -> Bool = { ($0 as? NATSError)?.code == .payloadTooLarge }
        await #expect { try await c.publish("big", [UInt8](repeating: 1, count: 1025)) } throws: { tooLarge($0) }
        #expect { try c.publishWithoutWaiting("big", [UInt8](repeating: 1, count: 1024 - block.count + 1), headers: headers) } throws: { tooLarge($0) }
        #expect { try [UInt8](repeating: 1, count: 2000).withUnsafeBytes { try c.publishWithoutWaiting("big", bytes: $0) } } throws: { tooLarge($0) }
        #expect {
            try Array("big".utf8).withUnsafeBytes { s in
                try block.withUnsafeBytes { h in try [UInt8](repeating: 1, count: 1024 - block.count + 1).withUnsafeBytes { try c.publishWithoutWaiting(subject: s, headerBlock: h, payload: $0) } }
            }
        } throws: { tooLarge($0) }
        await #expect { _ = try await c.request("big", [UInt8](repeating: 1, count: 4096), timeout: .seconds(2)) } throws: { tooLarge($0) }
        // At the limit it goes, on the same connection.
        try await c.publish("big", [UInt8](repeating: 1, count: 1024))
        try await c.publish("big", [UInt8](repeating: 1, count: 1024 - block.count), headers: headers)
        try await c.flush()
        #expect(await eventually { got.items == [1024, 1024 - block.count] }, "\(got.items)")
        #expect(try await c.state().reconnects == 0)
        #expect(!events.items.contains { if case .disconnected = $0 { true } else { false } }, "\(events.items)")
        await c.close()
    }

    /// `pauseDeliveries`: nothing handled while paused (pauses nest), a pause from a handler
    /// stops the rest of that read, and everything arrives after, in order, on the same
    /// connection; views show the same messages as copies.
    @Test func pausedDeliveriesWaitAndArriveInOrderAfter() async throws {
        let server = try await NATSServerProcess()
        let events = Collector<NATSClient.Event>()
        let sub = try await client([server.url], name: "sub", events: events)
        let pub = try await client([server.url], name: "pub")
        let got = Collector<String>()
        try await sub.subscribeViews("ticks") { view in
            got.add(String(decoding: view.payload, as: UTF8.self))
            if got.count == 1 { sub.pauseDeliveries() }  // from the handler: the rest of the read waits
        }
        try await sub.flush()
        for i in 0..<50 { try pub.publishWithoutWaiting("ticks", Array("\(i)".utf8)) }
        try await pub.flush()
        try await Task.sleep(for: .milliseconds(300))
        #expect(got.items == ["0"], "handled while paused: \(got.items)")
        sub.pauseDeliveries()  // nested
        sub.resumeDeliveries()
        try await Task.sleep(for: .milliseconds(200))
        #expect(got.count == 1, "one pause is still in force")
        sub.resumeDeliveries()
        #expect(await eventually { got.count == 50 })
        #expect(got.items == (0..<50).map(String.init))
        try await sub.flush()  // PINGs and PONGs flow again too
        #expect(!events.items.contains { if case .disconnected = $0 { true } else { false } })
        await sub.close()
        await pub.close()
    }

    @Test func requestsGetRepliesNoRespondersAndTimeouts() async throws {
        let server = try await NATSServerProcess()
        let responder = try await client([server.url], name: "responder")
        try await responder.subscribe("svc.upper") { m in
            guard let reply = m.replyTo else { return }
            Task { try await responder.publish(reply, Array(String(decoding: m.payload, as: UTF8.self).uppercased().utf8)) }
        }
        try await responder.subscribe("svc.silent") { _ in }
        try await responder.flush()
        let caller = try await client([server.url], name: "caller")
        #expect(String(decoding: try await caller.request("svc.upper", Array("abc".utf8)).payload, as: UTF8.self) == "ABC")
        await #expect { _ = try await caller.request("svc.nobody", []) } throws: { ($0 as? NATSError)?.code == .noResponders }
        await #expect { _ = try await caller.request("svc.silent", [], timeout: .milliseconds(200)) } throws: { ($0 as? NATSError)?.code == .timeout }
        await responder.close()
        await caller.close()
    }

    @Test func afterTheServerRestartsTheClientReconnectsAndSubscribesAgain() async throws {
        let server = try await NATSServerProcess()
        let events = Collector<NATSClient.Event>()
        let sub = try await client([server.url], name: "sub", events: events)
        let got = Collector<String>()
        try await sub.subscribe("a.b") { got.add(String(decoding: $0.payload, as: UTF8.self)) }
        try await sub.flush()
        await server.kill()
        #expect(await eventually { events.items.contains { if case .disconnected = $0 { true } else { false } } })
        await #expect(throws: NATSError.self) { try await sub.publish("a.b", []) }  // not connected: refused, not queued
        let again = try await NATSServerProcess(port: server.port)
        try await sub.waitUntilConnected()
        // Connected means the SUB is written, not that the server has taken it: the PONG says
        // so. (The publisher's connection is another; the server orders nothing across the two.)
        try await sub.flush()
        let pub = try await client([again.url], name: "pub")
        try await pub.publish("a.b", Array("after".utf8))
        try await pub.flush()
        #expect(await eventually { got.items == ["after"] })
        #expect(try await sub.state().reconnects == 1)
        await sub.close()
        await pub.close()
    }

    @Test func clusterURLsAreLearnedAndUsedForFailover() async throws {
        let a = try await NATSServerProcess(cluster: true, name: "a")
        let b = try await NATSServerProcess(routes: [a.clusterPort], name: "b")
        // A client whose CONNECT the server handles while a route forms can miss the INFO update
        // that announces the new node (the server's race, not the client's; the log's "Route
        // connection created" comes before the server updates its client URLs): connect once a
        // fresh connection's INFO already names b.
        #expect(await eventually(30) { firstINFO(port: a.port)?.contains("127.0.0.1:\(b.port)") == true })
        let events = Collector<NATSClient.Event>()
        let c = try await client([a.url], name: "failover", events: events)  // told about a only
        let learned = await eventually { (try? await c.state().known.contains("nats://127.0.0.1:\(b.port)")) == true }
        let known = try await c.state().known
        #expect(learned, "events \(events.items), known \(known), b \(b.port); a's log: \(a.process.stderr.suffix(1500))")
        let got = Collector<String>()
        try await c.subscribe("x") { got.add(String(decoding: $0.payload, as: UTF8.self)) }
        await a.kill()
        #expect(await eventually { (try? await c.state().connected) == "nats://127.0.0.1:\(b.port)" })
        try await c.flush()  // b has taken the SUB made again (see the restart test)
        let pub = try await client([b.url], name: "pub")
        try await pub.publish("x", Array("via b".utf8))
        try await pub.flush()
        #expect(await eventually { got.items == ["via b"] })
        await c.close()
        await pub.close()
    }

    /// A server that stops answering (SIGSTOP: its socket stays open, as across a network that
    /// dropped without a reset) is noticed by the keepalive and left for the next one; while it
    /// answered, the same keepalive dropped nothing.
    @Test func aServerThatStopsAnsweringIsDroppedAsStaleAndTheNextTaken() async throws {
        let a = try await NATSServerProcess(name: "a"), b = try await NATSServerProcess(name: "b")
        let events = Collector<NATSClient.Event>()
        let c = try await client([a.url, b.url], name: "keepalive", events: events) {
            $0.pingInterval = .milliseconds(250)
            $0.maxPingsOutstanding = 2
        }
        #expect(try await c.state().connected == a.url)
        let got = Collector<String>()
        try await c.subscribe("x") { got.add(String(decoding: $0.payload, as: UTF8.self)) }
        try await c.flush()
        try await Task.sleep(for: .seconds(1))  // four keepalive rounds, each answered
        try await c.flush()  // a caller's PING is answered in turn among them
        #expect(!events.items.contains { if case .disconnected = $0 { true } else { false } }, "\(events.items)")

        #expect(await a.process.stopAndWaitUntilStopped())
        #expect(await eventually(30) { (try? await c.state().connected) == b.url }, "\(events.items)")
        let dropped = events.items.compactMap { if case .disconnected(let server, let reason) = $0 { (server, reason) } else { nil } }
        #expect(dropped.count == 1 && dropped.first?.0 == a.url, "\(dropped)")
        #expect(dropped.first?.1 == "stale connection: 2 PINGs unanswered (one every 0.25 seconds)", "\(dropped)")
        try await c.flush()  // b has taken the SUB made again (see the restart test)
        let pub = try await client([b.url], name: "pub")
        try await pub.publish("x", Array("via b".utf8))
        try await pub.flush()
        #expect(await eventually { got.items == ["via b"] }, "resubscribed on b: \(got.items)")
        await c.close()
        await pub.close()
    }

    /// A server that accepts the TCP connection but never sends INFO (stopped), and a listener
    /// whose backlog is full (its SYNs unanswered, like a host gone behind a firewall), are each
    /// given up at `connectTimeout`, and the client connects to the next server instead of
    /// waiting for ever (or for the kernel's minutes of SYN retries).
    @Test func serversThatNeverAnswerAreGivenUpAtTheConnectTimeout() async throws {
        let stopped = try await NATSServerProcess(name: "stopped"), good = try await NATSServerProcess(name: "good")
        #expect(await stopped.process.stopAndWaitUntilStopped())  // stopped before any INFO could go out
        let full = try FullBacklog()
        let events = Collector<NATSClient.Event>()
        let c = try await client([stopped.url, "nats://127.0.0.1:\(full.port)", good.url], name: "patient", events: events) {
            $0.connectTimeout = .seconds(1)
        }
        #expect(try await c.state().connected == good.url)
        let failed = events.items.compactMap { if case .connectFailed(let server, let reason) = $0 { "\(server) \(reason)" } else { nil } }
        #expect(failed == [
            "\(stopped.url) no INFO from the server within 1.0 seconds",
            "nats://127.0.0.1:\(full.port) connect to 127.0.0.1:\(full.port): no answer within 1.0 seconds",
        ], "\(events.items)")
        try await c.flush()
        await c.close()
    }

    /// A user and password, or a token, go in CONNECT; a refused login is a failed attempt
    /// (never `connected`: that waits for the PONG to the PING after CONNECT), told as the
    /// server's error and as the attempt's reason.
    @Test func credentialsAreSentAndARefusedLoginIsToldOnce() async throws {
        let guarded = try await NATSServerProcess(name: "guarded", arguments: ["--user", "robot", "--pass", "s3cret"])
        let member = try await client([guarded.url], name: "member") {
            $0.user = "robot"
            $0.password = "s3cret"
        }
        let got = Collector<String>()
        try await member.subscribe("private") { got.add(String(decoding: $0.payload, as: UTF8.self)) }
        try await member.flush()
        try await member.publish("private", Array("in".utf8))
        #expect(await eventually { got.items == ["in"] })

        let events = Collector<NATSClient.Event>()
        var options = NATSClient.Options(servers: [guarded.url], name: "intruder")
        options.user = "robot"
        options.password = "guess"
        options.onEvent = { events.add($0) }
        let intruder = try NATSClient(options)
        #expect(await eventually { events.items.contains { if case .connectFailed = $0 { true } else { false } } })
        await intruder.close()
        let errors = events.items.compactMap { if case .serverError(_, let m) = $0 { m } else { nil } }
        let failed = events.items.compactMap { if case .connectFailed(_, let r) = $0 { r } else { nil } }
        #expect(errors.first == "Authorization Violation", "\(events.items)")
        #expect(failed.first == "-ERR Authorization Violation", "\(events.items)")
        #expect(!events.items.contains { if case .connected = $0 { true } else if case .disconnected = $0 { true } else { false } }, "\(events.items)")
        #expect(!intruder.isConnected)

        let tokened = try await NATSServerProcess(name: "tokened", arguments: ["--auth", "t0ken"])
        let holder = try await client([tokened.url], name: "holder") { $0.token = "t0ken" }
        try await holder.flush()
        #expect(try await holder.state().connected == tokened.url)
        await member.close()
        await holder.close()
    }

    /// This client speaks no TLS. A server that requires it (its INFO says `tls_required`) is
    /// not sent CONNECT in the clear (with its credentials) to fail on garbage: the attempt
    /// fails at once, saying why, and the client goes on to the next server.
    @Test func aServerThatRequiresTLSIsRefusedWithTheReason() async throws {
        let key = TestPaths.file("nats-tls", ".key"), cert = TestPaths.file("nats-tls", ".crt")
        let openssl = try RunningProcess("/usr/bin/openssl", [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
        ])
        #expect(await openssl.waitForExit() == 0, "\(openssl.stderr)")
        let secure = try await NATSServerProcess(name: "secure", arguments: ["--tls", "--tlscert", cert, "--tlskey", key])
        let plain = try await NATSServerProcess(name: "plain")
        let events = Collector<NATSClient.Event>()
        let c = try await client([secure.url, plain.url], events: events) { $0.token = "secret" }
        #expect(try await c.state().connected == plain.url)
        let failed = events.items.compactMap { if case .connectFailed(let server, let r) = $0 { "\(server) \(r)" } else { nil } }
        #expect(failed.first == "\(secure.url) the server requires TLS, which this client does not speak (use a NATS leaf node on this host, or a tunnel)", "\(events.items)")
        #expect(!secure.process.stderr.contains("secret"))
        await c.close()
    }

    @Test func badSubjectsAndServersAreRefused() async throws {
        #expect(throws: NATSError.self) { _ = try NATSClient(.init(servers: ["http://x"])) }
        #expect(throws: NATSError.self) { _ = try NATSClient(.init(servers: [])) }
        var noKeepalive = NATSClient.Options(servers: ["nats://127.0.0.1:4222"])
        noKeepalive.pingInterval = .zero
        #expect { _ = try NATSClient(noKeepalive) } throws: { ($0 as? NATSError)?.code == .invalidArgument }
        var noPings = NATSClient.Options(servers: ["nats://127.0.0.1:4222"])
        noPings.maxPingsOutstanding = 0
        #expect { _ = try NATSClient(noPings) } throws: { ($0 as? NATSError)?.code == .invalidArgument }
        let server = try await NATSServerProcess()
        let c = try await client([server.url])
        for bad in ["", "a..b", "a b", "a.>.b", "a.*"] {
            await #expect(throws: NATSError.self, "\(bad)") { try await c.publish(bad, []) }
        }
        await #expect(throws: NATSError.self) { try await c.subscribe("a.>.b") { _ in } }
        await c.close()
    }
}

/// A TCP listener on loopback with a backlog of 0 that never accepts, holding one connection
/// in its queue: the kernel drops every further SYN, so a connect to it gets no answer.
final class FullBacklog {
    let port: UInt16
    private let listener: Int32
    private let queued: Int32

    init() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.listener = listener
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withLoopback(port: 0) { bind(listener, $0, length) + listen(listener, 0) + getsockname(listener, $0, &length) }
        port = bound.port
        queued = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard bound.result == 0, connectLoopback(queued, port: port) else { throw TestSupportError("cannot set up a full backlog: errno \(errno)") }
    }

    deinit {
        close(queued)
        close(listener)
    }
}

/// The INFO line a server sends a new connection first (nil if it sends none within a second).
func firstINFO(port: UInt16) -> String? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var wait = timeval(tv_sec: 1, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
    guard connectLoopback(fd, port: port) else { return nil }
    var line: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while !line.contains(0x0A) {
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return nil }
        line += buffer[..<n]
    }
    return String(decoding: line, as: UTF8.self)
}

/// Calls `body` with 127.0.0.1:`port` as a `sockaddr`; its result, and the port the address
/// holds afterwards (what `getsockname` wrote into it).
func withLoopback<R>(port: UInt16, _ body: (UnsafeMutablePointer<sockaddr>) -> R) -> (result: R, port: UInt16) {
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = port.bigEndian
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let result = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1, body) }
    return (result, UInt16(bigEndian: addr.sin_port))
}

/// A blocking connect of `fd` to 127.0.0.1:`port`.
func connectLoopback(_ fd: Int32, port: UInt16) -> Bool {
    withLoopback(port: port) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }.result == 0
}
