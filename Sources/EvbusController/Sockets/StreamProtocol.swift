import Glibc
import EvbusIO

/// Your code for one stream connection (TCP or Unix), Twisted's `Protocol`: the controller calls
/// it on its own thread, the thread its handlers run on, so a protocol and the handlers share
/// state without locks. Make one per connection (a server's factory makes one for each client).
public protocol StreamProtocol: AnyObject {
    /// The connection is up; keep `transport` to write to it.
    func connectionMade(_ transport: StreamTransport)
    /// Bytes arrived: as many as one read returned (a stream has no message boundaries; frame
    /// them yourself).
    func dataReceived(_ data: [UInt8])
    /// The connection is gone, for `reason`; nothing more arrives and writes are dropped.
    func connectionLost(_ reason: ConnectionLost)
    /// The queued output, having passed the transport's high watermark (`isWritable` false),
    /// drained below its low one: a producer that paused may write again.
    func writeBufferDrained()
}

extension StreamProtocol {
    public func connectionMade(_ transport: StreamTransport) {}
    public func connectionLost(_ reason: ConnectionLost) {}
    public func writeBufferDrained() {}
}

/// Why a connection ended.
public enum ConnectionLost: Sendable, Equatable, CustomStringConvertible {
    /// The other side closed it.
    case closedByPeer
    /// `loseConnection()` or `abortConnection()` on this side, or the controller shut down.
    case closedLocally
    /// A read or write failed; the text names the call and errno.
    case failed(String)

    init(_ reason: Channel.CloseReason) {
        switch reason {
        case .endOfFile: self = .closedByPeer
        case .local: self = .closedLocally
        case .error(let e): self = .failed(e.description)
        }
    }

    public var description: String {
        switch self {
        case .closedByPeer: "closed by the peer"
        case .closedLocally: "closed locally"
        case .failed(let why): why
        }
    }
}

/// One stream connection, Twisted's `Transport`: writes are queued and leave together at the end
/// of the loop's iteration. Use it on the controller's thread only (in a protocol's callbacks or
/// a handler of the same controller); it traps elsewhere.
public final class StreamTransport {
    private let channel: Channel
    /// The other end, and this end, of the connection.
    public let peer: SocketAddress
    public let host: SocketAddress
    /// The controller whose thread runs this connection: dispatch to it from a protocol.
    public let controller: Controller

    init(channel: Channel, controller: Controller, peer: SocketAddress, host: SocketAddress) {
        self.channel = channel
        self.controller = controller
        self.peer = peer
        self.host = host
    }

    private func onLoop() {
        precondition(controller.loop.inEventLoop, "a StreamTransport was used off its controller's thread")
    }

    /// Still open (not closed by either side, and not closing).
    public var isConnected: Bool { !channel.isClosing }
    /// Bytes queued and not yet taken by the kernel.
    public var bufferedBytes: Int { channel.bufferedBytes }
    /// False from the moment the queued output passes 1 MiB until it drains below 256 KiB
    /// (then `writeBufferDrained` is called): a producer should pause meanwhile.
    public var isWritable: Bool { channel.isWritable }

    public func write(_ bytes: [UInt8]) {
        onLoop()
        guard !channel.isClosing else { return }
        channel.write(bytes)
    }

    public func write(_ text: String) { write(Array(text.utf8)) }

    /// Writes each chunk in turn (Twisted's `writeSequence`).
    public func writeSequence(_ chunks: some Sequence<[UInt8]>) {
        for chunk in chunks { write(chunk) }
    }

    /// Closes once what is queued has been written (within 2 s).
    public func loseConnection() {
        onLoop()
        channel.closeAfterFlush()
    }

    /// Closes now; queued output is discarded.
    public func abortConnection() {
        onLoop()
        channel.close(.local)
    }

    /// Stops reading (the sender is then held back by the kernel) until `resumeProducing`.
    public func pauseProducing() { onLoop(); channel.pauseReading() }
    public func resumeProducing() { onLoop(); channel.resumeReading() }
}

/// Connects a channel's events to a user's protocol.
final class StreamDelegate: ChannelDelegate {
    let user: any StreamProtocol
    let controller: Controller

    init(_ user: any StreamProtocol, controller: Controller) {
        self.user = user
        self.controller = controller
    }

    func channelReceived(_ channel: Channel, _ bytes: UnsafeRawBufferPointer) -> Int {
        user.dataReceived(Array(bytes))
        return bytes.count
    }

    func channelBecameWritable(_ channel: Channel) { user.writeBufferDrained() }

    func channelClosed(_ channel: Channel, _ reason: Channel.CloseReason) {
        controller.engineOnLoop?.sockets[ObjectIdentifier(channel)] = nil
        user.connectionLost(ConnectionLost(reason))
    }

    /// Wraps a connected fd on `controller`'s loop and tells the protocol. Loop thread only.
    static func start(fd: Int32, controller: Controller, user: any StreamProtocol) throws(ControllerError) {
        let channel: Channel
        do {
            channel = try Channel(fd: fd, loop: controller.loop)
        } catch {
            close(fd)
            throw ControllerError(.socketFailed, error.description)
        }
        let peer = SocketAddress.of(fd, peer: true) ?? .unix(path: "")
        let host = SocketAddress.of(fd, peer: false) ?? .unix(path: "")
        channel.delegate = StreamDelegate(user, controller: controller)
        controller.engineOnLoop?.sockets[ObjectIdentifier(channel)] = { [weak channel] in channel?.close(.local) }
        user.connectionMade(StreamTransport(channel: channel, controller: controller, peer: peer, host: host))
    }
}
