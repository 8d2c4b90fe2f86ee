import Evbus
import Glibc
import Testing

/// Echoes and reports what happens to it.
final class Reporter: StreamProtocol {
    let events: Log<String>
    let echo: Bool
    var transport: StreamTransport?
    init(_ events: Log<String>, echo: Bool = true) { (self.events, self.echo) = (events, echo) }
    func connectionMade(_ transport: StreamTransport) {
        self.transport = transport
        events.add("made \(transport.host) <- \(transport.peer)")
    }
    func dataReceived(_ data: [UInt8]) {
        events.add("data \(String(decoding: data, as: UTF8.self))")
        if echo { transport?.write(data) }
    }
    func connectionLost(_ reason: ConnectionLost) { events.add("lost \(reason)") }
}

/// Says something once connected, and records the rest.
final class Sayer: StreamProtocol {
    let text: String, events: Log<String>
    init(_ text: String, _ events: Log<String>) { (self.text, self.events) = (text, events) }
    func connectionMade(_ transport: StreamTransport) { transport.write(text) }
    func dataReceived(_ data: [UInt8]) { events.add(String(decoding: data, as: UTF8.self)) }
    func connectionLost(_ reason: ConnectionLost) { events.add("lost \(reason)") }
}

final class Silent: DatagramProtocol {
    let events: Log<String>
    init(_ events: Log<String>) { self.events = events }
    func startProtocol(_ transport: DatagramTransport) { events.add("start \(transport.host)") }
    func datagramReceived(_ data: [UInt8], from sender: SocketAddress) {}
    func stopProtocol() { events.add("stop") }
}

@Suite struct SocketTests {
    func code(_ body: () throws -> Void) -> (ControllerError.Code, String)? {
        do { try body() } catch let e as ControllerError { return (e.code, e.message) } catch { return nil }
        return nil
    }

    func tempPath(_ name: String) -> String { "/tmp/evbus-sock-\(getpid())-\(name)" }

    @Test func aUnixStreamServerEchoesAndRemovesItsFileWhenClosed() async throws {
        let path = tempPath("echo")
        unlink(path)
        let server = try Controller(name: "unix-server")
        defer { server.shutdown() }
        let serverEvents = Log<String>()
        let listening = try server.listen(on: .unix(path: path)) { Reporter(serverEvents) }
        #expect(listening.address == .unix(path: path))
        let heard = Log<String>()
        let client = try Controller(name: "unix-client")
        try await client.connect(to: .unix(path: path)) { Sayer("ping", heard) }.value
        await heard.waitUntil { $0 == ["ping"] }
        #expect(heard.all == ["ping"])
        #expect(serverEvents.all.first == "made unix:\(path) <- unix:")
        client.shutdown()
        await client.stopped()
        await serverEvents.waitUntil { $0.last == "lost closed by the peer" }
        #expect(serverEvents.all.last == "lost closed by the peer")
        listening.close()
        try await server.pending().value
        #expect(access(path, F_OK) != 0)
    }

    @Test func tcpTransportsNameBothEnds() async throws {
        let server = try Controller(name: "tcp-server")
        defer { server.shutdown() }
        let events = Log<String>()
        let listening = try server.listen(on: .tcp("127.0.0.1", 0)) { Reporter(events) }
        let port = try #require(listening.address.port)
        #expect(port != 0 && listening.address == .tcp("127.0.0.1", port))
        let client = try Controller(name: "tcp-client")
        defer { client.shutdown() }
        let heard = Log<String>()
        try await client.connect(to: .tcp("localhost", port)) { Sayer("x", heard) }.value
        await events.waitUntil { $0.count == 2 }
        let made = try #require(events.all.first)
        #expect(made.hasPrefix("made 127.0.0.1:\(port) <- 127.0.0.1:") && !made.hasSuffix(":\(port)"))
        #expect(events.all.last == "data x")
    }

    @Test func anIPv6LoopbackServerWorks() async throws {
        let server = try Controller(name: "v6")
        defer { server.shutdown() }
        let events = Log<String>()
        guard let listening = try? server.listen(on: .tcp("::1", 0), { Reporter(events) }) else { return }  // no IPv6 here
        #expect(listening.address.description.hasPrefix("[::1]:"))
        let heard = Log<String>()
        try await server.connect(to: listening.address) { Sayer("six", heard) }.value
        await heard.waitUntil { $0 == ["six"] }
        #expect(heard.all == ["six"])
    }

    @Test func aRefusedConnectionFailsThePendingWithTheCall() async throws {
        let probe = try Controller(name: "probe")
        defer { probe.shutdown() }
        // A port held bound but not listening: refused, and no other test can take it meanwhile
        // (a closed listener's port could be reused at once by a test running in parallel).
        let (held, port) = try #require(boundLoopbackSocket(backlog: nil))
        defer { close(held) }
        do {
            try await probe.connect(to: .tcp("127.0.0.1", port)) { Sayer("", Log()) }.value
            Issue.record("connected to a closed port")
        } catch let error as ControllerError {
            #expect(error.code == .socketFailed)
            #expect(error.message.contains("connect(127.0.0.1:\(port))") && error.message.contains("errno \(ECONNREFUSED)"))
        }
        await #expect(throws: ControllerError.self) {
            try await probe.connect(to: .unix(path: tempPath("nobody"))) { Sayer("", Log()) }.value
        }
    }

    @Test func aConnectNobodyAnswersFailsAtItsTimeout() async throws {
        let probe = try Controller(name: "probe")
        defer { probe.shutdown() }
        // A listener with a backlog of 0 that never accepts: the kernel queues one connection,
        // then drops further SYNs, so the next connect gets no answer (as from a host that is
        // down or firewalled) and the kernel alone would retry it for minutes.
        let (silent, port) = try #require(boundLoopbackSocket(backlog: 0))
        defer { close(silent) }
        try await probe.connect(to: .tcp("127.0.0.1", port), timeout: .seconds(30)) { Sayer("", Log()) }.value
        do {
            try await probe.connect(to: .tcp("127.0.0.1", port), timeout: .milliseconds(200)) { Sayer("", Log()) }.value
            Issue.record("a connect to a full backlog was answered")
        } catch let error as ControllerError {
            #expect(error.code == .timedOut)
            #expect(error.message == "connect to 127.0.0.1:\(port): no answer within 0.2 seconds")
        }
    }

    /// A TCP socket bound to 127.0.0.1 on a port the kernel chose, listening with `backlog` if
    /// one is given (and never accepting): the socket and its port, nil if a call failed.
    func boundLoopbackSocket(backlog: Int32?) -> (fd: Int32, port: UInt16)? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let failed = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) != 0 || (backlog.map { listen(fd, $0) != 0 } ?? false) || getsockname(fd, $0, &length) != 0
            }
        }
        if failed {
            close(fd)
            return nil
        }
        return (fd, UInt16(bigEndian: addr.sin_port))
    }

    @Test func badAddressesAreRefusedByName() throws {
        let c = try Controller(name: "bad")
        defer { c.shutdown() }
        let named = code { try c.listen(on: .tcp("example.com", 80)) { Reporter(Log()) } }
        #expect(named?.0 == .badAddress && named?.1.contains("'example.com'") == true)
        let long = code { try c.listen(on: .unix(path: "/tmp/" + String(repeating: "x", count: 200))) { Reporter(Log()) } }
        #expect(long?.0 == .badAddress)
        let udp = code { try c.listenUDP(on: .udp("300.1.1.1", 0)) { Silent(Log()) } }
        #expect(udp?.0 == .badAddress)
    }

    @Test func aPortInUseIsRefusedAndTheFirstServerKeepsServing() async throws {
        let c = try Controller(name: "in-use")
        defer { c.shutdown() }
        let events = Log<String>()
        let first = try c.listen(on: .tcp("127.0.0.1", 0)) { Reporter(events) }
        let refused = code { try c.listen(on: first.address) { Reporter(Log()) } }
        #expect(refused?.0 == .socketFailed && refused?.1.contains("bind(") == true && refused?.1.contains("errno \(EADDRINUSE)") == true)
        let heard = Log<String>()
        try await c.connect(to: first.address) { Sayer("still here", heard) }.value
        await heard.waitUntil { $0 == ["still here"] }
        #expect(heard.all == ["still here"])
    }

    @Test func shuttingAControllerDownClosesItsListenersAndConnections() async throws {
        let server = try Controller(name: "closing")
        let serverEvents = Log<String>()
        let listening = try server.listen(on: .tcp("127.0.0.1", 0)) { Reporter(serverEvents, echo: false) }
        let client = try Controller(name: "left")
        defer { client.shutdown() }
        let heard = Log<String>()
        try await client.connect(to: listening.address) { Sayer("hi", heard) }.value
        await serverEvents.waitUntil { $0.count == 2 }
        server.shutdown()
        await server.stopped()
        #expect(serverEvents.all.last == "lost closed locally")
        await heard.waitUntil { $0.last == "lost closed by the peer" }
        #expect(heard.all == ["lost closed by the peer"])
        await #expect(throws: ControllerError.self) {
            try await client.connect(to: listening.address) { Sayer("", Log()) }.value
        }
        #expect(throws: ControllerError.self) { try server.listen(on: .tcp("127.0.0.1", 0)) { Reporter(Log()) } }
    }

    @Test func closingAUDPSocketStopsItsProtocol() async throws {
        let c = try Controller(name: "udp-close")
        defer { c.shutdown() }
        let events = Log<String>()
        let handle = try c.listenUDP(on: .udp("127.0.0.1", 0)) { Silent(events) }
        #expect(events.all == ["start \(handle.address)"])
        handle.close()
        try await c.pending().value
        #expect(events.all.last == "stop")
    }

    @Test func eventLoopComesWithImportEvbusAndControllersCanShareOne() async throws {
        let loop = try EventLoop.startThread(name: "shared")
        defer { loop.stopAndJoin() }
        let a = try Controller(name: "a", loop: loop)
        let b = try Controller(name: "b", loop: loop)
        try a.on("where") { s in s.controller.loop.inEventLoop }
        try b.on("where") { s in s.controller.loop === loop }
        #expect(try await a.dispatch("where").value.results.first as? Bool == true)
        #expect(try await b.dispatch("where").value.results.first as? Bool == true)
        a.shutdown()
        b.shutdown()
        await a.stopped()
        await b.stopped()
    }
}
