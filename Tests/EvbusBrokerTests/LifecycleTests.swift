import Evbus
import EvbusIO
import EvbusTestSupport
import Foundation
import Testing

@Suite struct LifecycleTests {
    @Test func shutdownTellsClientsWhyAndRemovesTheSocket() async throws {
        let broker = try InProcessBroker()
        let path = broker.socketPath
        var once = Peer.Options()
        once.reconnect = .never  // (a reconnecting peer's iterations carry on: ReconnectTests)
        let peer = try await Peer.connect(to: path, options: once)
        let subscription = try await peer.subscribe("x")
        broker.shutdown()
        do {
            for try await _ in subscription {}
            Issue.record("iteration ended without an error")
        } catch let error as EvbusError {
            #expect(error.code == .connectionLost)
            #expect(error.message.contains("shutting down"))
        }
        #expect(access(path, F_OK) != 0)
        await #expect(throws: EvbusError.self) { try await peer.publish("x", "late") }
    }

    /// A `Broker` dropped without `shutdown()` while a client is connected and publishing stops
    /// like a shut-down one (its connections refer to the server without retaining it: serving
    /// on after the last reference went would read freed memory).
    @Test func aBrokerDroppedWithoutShutdownStopsInsteadOfServingOn() async throws {
        var broker: InProcessBroker? = try InProcessBroker()
        let path = broker!.socketPath
        var once = Peer.Options()
        once.reconnect = .never
        let peer = try await Peer.connect(to: path, options: once)
        let subscription = try await peer.subscribe("x")
        let publishing = Task { for i in 0..<100_000 { try await peer.publish("x", "\(i)") } }
        broker = nil
        var received = 0
        do {
            for try await _ in subscription { received += 1 }
        } catch let error as EvbusError {
            #expect(error.code == .connectionLost)
        }
        _ = await publishing.result
        #expect(await eventually { access(path, F_OK) != 0 })
        _ = (broker, received)
    }

    @Test func aSecondBrokerOnALiveSocketIsRefused() throws {
        let first = try InProcessBroker()
        defer { first.shutdown() }
        #expect {
            _ = try InProcessBroker { $0.socketPath = first.socketPath }
        } throws: { error in
            "\(error)".contains("another broker is already listening on \(first.socketPath)")
        }
        #expect(UnixSocket.isLive(path: first.socketPath))  // the first one is untouched
    }

    @Test func aStaleSocketFileIsReplaced() throws {
        let path = TestPaths.socket("stale")
        // Bind a socket and close it without unlinking: what a crashed broker leaves behind.
        let fd = try UnixSocket.listen(path: path, mode: 0o600)
        close(fd)
        #expect(access(path, F_OK) == 0 && !UnixSocket.isLive(path: path))
        let broker = try InProcessBroker { $0.socketPath = path }
        defer { broker.shutdown() }
        #expect(UnixSocket.isLive(path: path))
        #expect(broker.logLines.contains("replaced stale socket file"))
    }

    @Test func aFileThatIsNotASocketIsNeverReplaced() throws {
        let path = TestPaths.socket("file")
        #expect(FileManager.default.createFile(atPath: path, contents: Data("precious".utf8)))
        defer { unlink(path) }
        #expect {
            _ = try InProcessBroker { $0.socketPath = path }
        } throws: { error in
            "\(error)".contains("is not a socket")
        }
        #expect(FileManager.default.contents(atPath: path) == Data("precious".utf8))
    }

    @Test func peerCredentialsAppearInTheBrokersLog() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let client = try RawClient.handshaken(broker.socketPath, name: "who")
        client.send([0, 0, 0, 0, 0])  // zero length: a protocol error, logged with the peer's identity
        _ = client.readUntilClosed()
        #expect(await eventually { broker.logLines.contains("uid=\(getuid()) pid=\(getpid()) name=who event=closed reason=protocol-error") })
    }
}
