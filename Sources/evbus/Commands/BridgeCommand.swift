import EvbusBridge
import EvbusIO
import Glibc

/// `evbus bridge --config FILE`: connects the local broker to NATS (docs/BRIDGE.md).
struct BridgeCommand: EvbusCommand {
    static let spec = CommandSpec(
        name: "bridge",
        abstract: "Bridge topics between the local broker and NATS (see docs/BRIDGE.md).",
        discussion: """
            Runs until SIGINT or SIGTERM. SIGUSR1 logs its counters (exported, imported, dropped,
            buffered, loops stopped, NATS reconnects). A config the bridge cannot use is refused
            with its key path (exit 78).
            """,
        options: [
            CommandSpec.socketOption,
            .init(long: "config", short: "c", valueName: "file", help: "The bridge's JSON config (required; Configs/bridge.json is an example)."),
        ])

    var configFile: String
    var socket: String?

    init(_ a: ParsedArguments) throws(UsageError) {
        guard let file = a.value("config") else { throw UsageError("Missing '--config <file>'") }
        configFile = file
        socket = a.value("socket")
    }

    func run() async throws -> Int32 {
        var config: BridgeConfig
        do {
            config = try BridgeConfig.load(file: configFile)
        } catch {
            Terminal.err("Error: \(configFile): \(error)\n")
            return ExitCode.config
        }
        if let socket { config.socket = socket }
        let log = Logger(label: "evbus-bridge")
        let bridge = Bridge(config: config) { line in log.log(.info, logfmt: line) }  // the bridge writes logfmt fields
        let signals = TerminationSignals()
        let usr1 = ReloadSignal(signal: SIGUSR1) { log.log(.info, logfmt: "event=counters \(bridge.counters)") }
        do {
            try await bridge.start()
        } catch {
            Terminal.err("Error: cannot start the bridge: \(error)\n")
            await bridge.stop()
            return ExitCode.failure
        }
        let name = await signals.wait()
        withExtendedLifetime(usr1) {}
        log.log(.info, logfmt: "event=stopping signal=\(name) \(bridge.counters)")
        await bridge.stop()
        return ExitCode.success
    }
}
