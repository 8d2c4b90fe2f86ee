import Evbus

/// The connection of a command that runs until told to stop (`sub`, `consume`, `respond`): it
/// survives a broker restart unless `--no-reconnect` was given, with a line on stderr for each
/// disconnect and reconnect so a person watching knows why nothing arrived for a while.
enum LongRunningPeer {
    static let option = CommandSpec.Option(
        long: "no-reconnect", short: nil, valueName: nil,
        help: "Exit with an error when the broker goes away, instead of reconnecting and carrying on.")

    /// Connects as `name`; `onDrop` is called (on the peer's loop) when a `--no-reconnect`
    /// connection ends unexpectedly.
    static func connect(
        socket: String?, name: String, reconnect: Bool, onDrop: (@Sendable (EvbusError) -> Void)? = nil
    ) async throws -> Peer {
        var options = Peer.Options()
        options.reconnect = reconnect ? .standard : .never
        options.onConnectionEvent = { event in
            switch event {
            case .disconnected(let error):
                Terminal.err("\(name): disconnected from the broker (\(error.message))\(reconnect ? "; reconnecting" : "")\n")
                if !reconnect { onDrop?(error) }
            case .reconnected(let id):
                Terminal.err("\(name): reconnected to the broker as connection \(id)\n")
            case .reconnecting:
                break  // one line per drop, not one per try
            case .gaveUp(let error):
                Terminal.err("\(name): \(error.message)\n")
            }
        }
        return try await Peer.connect(to: socket, name: name, options: options)
    }
}
