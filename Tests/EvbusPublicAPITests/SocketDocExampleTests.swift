// The socket examples of docs/CONTROLLER.md ("Your own sockets on the controller's loop"), run as
// tests; DocSyncTests checks that the doc's code blocks still appear here verbatim. This target
// depends on the Evbus product alone: what compiles here compiles for an outside package.

import Evbus
import Glibc
import Testing

@Suite struct SocketDocExampleTests {
    @Test func cookbookUDPTimeAndEchoServers() async throws {
        final class UDPTimeServer: DatagramProtocol {
            var transport: DatagramTransport?
            func startProtocol(_ transport: DatagramTransport) { self.transport = transport }
            func datagramReceived(_ data: [UInt8], from sender: SocketAddress) {
                try? transport?.write("\(time(nil))", to: sender)
            }
        }
        final class UDPEchoServer: DatagramProtocol {
            var transport: DatagramTransport?
            func startProtocol(_ transport: DatagramTransport) { self.transport = transport }
            func datagramReceived(_ data: [UInt8], from sender: SocketAddress) {
                try? transport?.write(data, to: sender)
            }
        }
        final class UDPClient: DatagramProtocol {
            let timeServer: SocketAddress, echoServer: SocketAddress, replies: Log<String>
            init(_ timeServer: SocketAddress, _ echoServer: SocketAddress, _ replies: Log<String>) {
                (self.timeServer, self.echoServer, self.replies) = (timeServer, echoServer, replies)
            }
            func startProtocol(_ transport: DatagramTransport) {
                try? transport.write([], to: timeServer)
                try? transport.write("Hello", to: echoServer)
            }
            func datagramReceived(_ data: [UInt8], from sender: SocketAddress) {
                replies.add(sender == echoServer ? "echo: \(String(decoding: data, as: UTF8.self))" : "time")
            }
        }
        let servers = try Controller(name: "servers")
        let timeService = try servers.listenUDP(on: .udp("127.0.0.1", 0)) { UDPTimeServer() }
        let echoService = try servers.listenUDP(on: .udp("127.0.0.1", 0)) { UDPEchoServer() }
        let replies = Log<String>()
        let client = try Controller(name: "client")
        try client.listenUDP(on: .udp("127.0.0.1", 0)) { UDPClient(timeService.address, echoService.address, replies) }
        await replies.waitUntil { $0.count == 2 }
        #expect(Set(replies.all) == ["time", "echo: Hello"])
        client.shutdown()
        servers.shutdown()
    }

    @Test func tcpEchoServerAndClient() async throws {
        final class Echo: StreamProtocol {
            var transport: StreamTransport?
            func connectionMade(_ transport: StreamTransport) { self.transport = transport }
            func dataReceived(_ data: [UInt8]) { transport?.write(data) }
        }
        final class Greeter: StreamProtocol {
            let heard: Log<String>
            var transport: StreamTransport?
            init(_ heard: Log<String>) { self.heard = heard }
            func connectionMade(_ transport: StreamTransport) {
                self.transport = transport
                transport.writeSequence([Array("hello ".utf8), Array("world".utf8)])
            }
            func dataReceived(_ data: [UInt8]) {
                heard.add(String(decoding: data, as: UTF8.self))
                if heard.all.joined() == "hello world" { transport?.loseConnection() }
            }
            func connectionLost(_ reason: ConnectionLost) { heard.add("[\(reason)]") }
        }
        let server = try Controller(name: "echo")
        let listening = try server.listen(on: .tcp("127.0.0.1", 0)) { Echo() }
        let heard = Log<String>()
        let client = try Controller(name: "client")
        try await client.connect(to: listening.address) { Greeter(heard) }.value
        await heard.waitUntil { $0.last == "[closed locally]" }
        #expect(heard.all.dropLast().joined() == "hello world")
        client.shutdown()
        server.shutdown()
    }
}
