import Evbus

/// One `evbus` subcommand.
protocol EvbusCommand: Sendable {
    static var spec: CommandSpec { get }
    /// Checks the parsed arguments; throws `UsageError` for anything the user must fix.
    init(_ arguments: ParsedArguments) throws(UsageError)
    /// Runs the command; returns the process exit code.
    func run() async throws -> Int32
}

enum CLI {
    static let version = "0.1.0"
    static let commands: [any EvbusCommand.Type] = [
        BrokerCommand.self, PubCommand.self, SubCommand.self, DeclareCommand.self, BindCommand.self, UnbindCommand.self,
        DeleteCommand.self, PurgeCommand.self, ConsumeCommand.self, RPCCommand.self, RespondCommand.self, StatsCommand.self,
        TopCommand.self, BridgeCommand.self, BenchCommand.self,
    ]

    static var topHelp: String {
        var out = """
            OVERVIEW: evbus \(version): a local message bus over Unix domain sockets.

            USAGE: evbus <subcommand> [<arguments>] [--help]

            SUBCOMMANDS:

            """
        for c in commands { out += CommandSpec.row(c.spec.name, c.spec.abstract) }
        out += "\n  See 'evbus help <subcommand>' for detailed help.\n"
        return out
    }

    /// Parses and runs; returns the exit code.
    static func run(_ args: [String]) async -> Int32 {
        guard let first = args.first else {
            Terminal.err("Error: Missing subcommand\n\n" + topHelp)
            return ExitCode.usage
        }
        switch first {
        case "--help", "-h":
            Terminal.out(topHelp)
            return ExitCode.success
        case "--version":
            Terminal.out("evbus \(version)\n")
            return ExitCode.success
        case "help":
            guard args.count > 1 else {
                Terminal.out(topHelp)
                return ExitCode.success
            }
            guard let command = commands.first(where: { $0.spec.name == args[1] }) else {
                return usageError(UsageError("Unknown subcommand '\(args[1])'"), usage: "evbus <subcommand>", hint: "evbus --help")
            }
            Terminal.out(command.spec.help)
            return ExitCode.success
        default:
            break
        }
        guard let command = commands.first(where: { $0.spec.name == first }) else {
            return usageError(UsageError("Unknown subcommand '\(first)'"), usage: "evbus <subcommand>", hint: "evbus --help")
        }
        let spec = command.spec
        let instance: any EvbusCommand
        do {
            let parsed = try ArgumentParser.parse(Array(args.dropFirst()), spec)
            if parsed.wantsHelp {
                Terminal.out(spec.help)
                return ExitCode.success
            }
            instance = try command.init(parsed)
        } catch {
            return usageError(error, usage: spec.usage, hint: "evbus \(spec.name) --help")
        }
        do {
            return try await instance.run()
        } catch let error as UsageError {
            return usageError(error, usage: spec.usage, hint: "evbus \(spec.name) --help")
        } catch let error as EvbusError {
            Terminal.err("Error: \(error.message)\n")
            return ExitCode.failure
        } catch {
            Terminal.err("Error: \(error)\n")
            return ExitCode.failure
        }
    }

    static func usageError(_ error: UsageError, usage: String, hint: String) -> Int32 {
        Terminal.err("Error: \(error.message)\nUsage: \(usage)\n  See '\(hint)' for more information.\n")
        return ExitCode.usage
    }
}
