import Evbus
import EvbusBroker
import EvbusIO
import EvbusTestSupport
import Foundation
import Testing

/// A datagram socket standing in for systemd's notification socket.
final class NotifySocket: Sendable {
    let address: String
    private let fd: Int32

    /// `abstract`: in the abstract namespace (`@name`), as systemd's own is.
    init(abstract: Bool = false) throws {
        let name = TestPaths.file("notify")
        address = abstract ? "@" + name : name
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        var path = Array(address.utf8)
        if abstract { path[0] = 0 }
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: path) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + path.count)
        let r = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        guard r == 0 else { throw TestSupportError("bind \(address): \(String(cString: strerror(errno)))") }
    }

    deinit {
        close(fd)
        if !address.hasPrefix("@") { unlink(address) }
    }

    /// Every datagram received so far, as text.
    func receivedSoFar() -> [String] {
        var out: [String] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { return out }
            out.append(String(decoding: buffer[0..<n], as: UTF8.self))
        }
    }
}

/// `evbus broker` under a service manager: readiness, watchdog, socket activation, signals.
@Suite struct ServiceTests {
    @Test(arguments: [false, true])
    func theBrokerSaysReadyPingsTheWatchdogAndSaysStopping(abstract: Bool) async throws {
        let notify = try NotifySocket(abstract: abstract)
        let broker = try await BrokerProcess(environment: ["NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "200000"])
        let heard = Collector<String>()
        func collect() -> [String] {
            for d in notify.receivedSoFar() { heard.add(d) }
            return heard.items
        }
        #expect(await eventually { collect().contains { $0.contains("WATCHDOG=1") } && collect().filter { $0 == "WATCHDOG=1" }.count >= 2 })
        let ready = try #require(heard.items.first)
        #expect(ready.split(separator: "\n").contains("READY=1"))
        #expect(ready.contains("MAINPID=\(broker.process.pid)") && ready.contains("STATUS=accepting connections on \(broker.socketPath)"))
        let peer = try await Peer.connect(to: broker.socketPath, name: "after-ready")
        await peer.close()
        // Read what is queued, as systemd would have: notifications to a full socket are dropped
        // (never waited for), and the pings must not crowd out STOPPING=1.
        _ = collect()
        #expect(await broker.stop() == 0)
        #expect(await eventually { collect().contains { $0.hasPrefix("STOPPING=1") } })
        #expect(await eventually { broker.process.stderr.contains("SIGTERM received: shutting down") })
    }

    @Test func aSupervisorThatStopsReadingNeverStallsTheBroker() async throws {
        let notify = try NotifySocket()
        let broker = try await BrokerProcess(environment: ["NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "2000"])
        // Nothing reads the socket: its queue (10 datagrams by default) fills within milliseconds.
        try await Task.sleep(for: .milliseconds(300))
        let peer = try await Peer.connect(to: broker.socketPath, name: "still-served")
        let sub = try await peer.subscribe("t")
        try await peer.publish("t", "served")
        for try await e in sub {
            #expect(e.text == "served")
            break
        }
        await peer.close()
        #expect(await broker.stop() == 0)
        withExtendedLifetime(notify) {}
    }

    @Test func withoutAWatchdogOnlyReadyAndStoppingAreSent() async throws {
        let notify = try NotifySocket()
        let broker = try await BrokerProcess(environment: ["NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"])
        #expect(await eventually { !notify.receivedSoFar().isEmpty })  // READY=1
        #expect(await broker.stop() == 0)
        let rest = notify.receivedSoFar()
        #expect(rest.count == 1 && rest[0].hasPrefix("STOPPING=1"), "\(rest)")  // the watchdog was another process's
    }

    @Test func underSocketActivationTheBrokerServesThePassedSocketAndLeavesItsFile() async throws {
        let path = TestPaths.socket("activated")
        let listening = try UnixSocket.listen(path: path, mode: 0o600)
        defer { close(listening) }
        // systemd sets LISTEN_PID to the service's own pid after it forks; `exec` keeps the shell's.
        let data = TestPaths.dataDirectory("activated")
        let broker = try RunningProcess(
            "/bin/sh", ["-c", "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" broker --data-dir \"$1\" --socket /nonexistent/ignored.sock", TestPaths.evbusBinary, data],
            passing: [listening])
        let peer = try await Peer.connect(to: path, name: "activated-client")
        let sub = try await peer.subscribe("t")
        try await peer.publish("t", "through the passed socket")
        for try await e in sub {
            #expect(e.text == "through the passed socket")
            break
        }
        await peer.close()
        #expect(await eventually { broker.stderr.contains("socket activation: serving the listening socket passed as descriptor 3 (\(path))") })
        broker.signal(SIGTERM)
        #expect(await broker.waitForExit() == 0)
        #expect(access(path, F_OK) == 0)  // systemd's file, kept for the next activation
        unlink(path)
    }

    @Test func passedDescriptorsForAnotherProcessAreIgnored() async throws {
        let notListening = TestPaths.socket("not-for-me")
        let broker = try await BrokerProcess(socketPath: notListening, environment: ["LISTEN_PID": "1", "LISTEN_FDS": "1"])
        #expect(await eventually { broker.process.stderr.contains("listening on") })
        #expect(!broker.process.stderr.contains("socket activation"))
        #expect(UnixSocket.isLive(path: notListening))
        #expect(await broker.stop() == 0)
    }

    @Test func aSecondSignalEndsAGracefulStopAtOnce() async throws {
        let config = TestPaths.dataDirectory("grace") + ".json"
        try #"{"shutdownGraceMillis": 600000}"#.write(toFile: config, atomically: true, encoding: .utf8)
        defer { unlink(config) }
        let broker = try await BrokerProcess(arguments: ["--config", config])
        // A client that never reads: the graceful stop would wait the whole grace for it.
        let stalled = try RawClient.handshaken(broker.socketPath, name: "stalled")
        stalled.send(.subscribe(subscriptionID: 1, pattern: "flood"))
        _ = try stalled.readFrame()  // its acknowledgement; nothing more is ever read
        let publisher = try await Peer.connect(to: broker.socketPath, name: "publisher")
        let chunk = [UInt8](repeating: 7, count: 60_000)
        for _ in 0..<20 { try await publisher.publish("flood", chunk) }  // more than the kernel buffers
        await publisher.close()
        broker.process.signal(SIGTERM)
        #expect(await eventually { broker.process.stderr.contains("SIGTERM received: shutting down") })
        #expect(broker.process.isRunning)  // still granting its grace period
        broker.process.signal(SIGTERM)
        #expect(await broker.process.waitForExit(seconds: 30) == 1)
        #expect(await eventually { broker.process.stderr.contains("SIGTERM received again: exiting at once") })
        withExtendedLifetime(stalled) {}
    }

    @Test func whenStderrIsTheJournalLinesCarryPriorities() async throws {
        let socket = TestPaths.socket("journal")
        // JOURNAL_STREAM names stderr's device and inode, as systemd sets it when stderr is the journal.
        let broker = try RunningProcess("/bin/sh", [
            "-c", #"JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec "$0" broker --socket "$1" --data-dir "$2""#,
            TestPaths.evbusBinary, socket, TestPaths.dataDirectory("journal"),
        ])
        #expect(await eventually { broker.stderr.contains("listening on") })
        broker.signal(SIGTERM)
        #expect(await broker.waitForExit() == 0)
        let lines = broker.stderr.split(separator: "\n")
        #expect(!lines.isEmpty && lines.allSatisfy { $0.hasPrefix("<6>level=info ") || $0.hasPrefix("<4>level=warning ") }, "\(broker.stderr)")
        #expect(!broker.stderr.contains("ts="))

        // A JOURNAL_STREAM naming something else is not the journal: timestamps, no priorities.
        let plain = try await BrokerProcess(environment: ["JOURNAL_STREAM": "1:1"])
        #expect(await plain.stop() == 0)
        #expect(await eventually { plain.process.stderr.hasPrefix("ts=") }, "\(plain.process.stderr)")
    }
}
