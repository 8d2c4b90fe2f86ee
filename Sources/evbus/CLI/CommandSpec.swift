/// Describes one command's arguments for parsing and for `--help`, in swift-argument-parser's style.
struct CommandSpec {
    struct Option {
        var long: String
        var short: Character?
        /// nil for a flag (no value).
        var valueName: String?
        var help: String
    }
    struct Positional {
        var name: String
        var help: String
        var isOptional = false
        /// Takes every remaining positional (at least one unless optional).
        var isRepeating = false
    }

    var name: String
    var abstract: String
    var discussion: String = ""
    var positionals: [Positional] = []
    var options: [Option] = []

    static let socketOption = Option(
        long: "socket", short: "s", valueName: "path",
        help: "The broker's socket (default: $EVBUS_SOCKET, else $XDG_RUNTIME_DIR/evbus.sock, else /tmp/evbus-<uid>.sock).")
    static let helpOption = Option(long: "help", short: "h", valueName: nil, help: "Show help information.")

    var usage: String {
        var parts = ["evbus", name]
        for p in positionals {
            var s = "<\(p.name)>"
            if p.isRepeating { s += " ..." }
            parts.append(p.isOptional ? "[\(s)]" : s)
        }
        for o in options {
            parts.append(o.valueName.map { "[--\(o.long) <\($0)>]" } ?? "[--\(o.long)]")
        }
        return parts.joined(separator: " ")
    }

    var help: String {
        var out = "OVERVIEW: \(abstract)\n"
        if !discussion.isEmpty { out += "\n\(discussion)\n" }
        out += "\nUSAGE: \(usage)\n"
        if !positionals.isEmpty {
            out += "\nARGUMENTS:\n"
            for p in positionals { out += Self.row("<\(p.name)>", p.help) }
        }
        out += "\nOPTIONS:\n"
        for o in options + [Self.helpOption] {
            var label = o.short.map { "-\($0), " } ?? ""
            label += "--\(o.long)"
            if let v = o.valueName { label += " <\(v)>" }
            out += Self.row(label, o.help)
        }
        return out
    }

    static func row(_ label: String, _ help: String) -> String {
        let pad = 26
        if label.count + 2 < pad {
            return "  " + label + String(repeating: " ", count: pad - label.count - 2) + help + "\n"
        }
        return "  \(label)\n" + String(repeating: " ", count: pad) + help + "\n"
    }
}

/// A misuse of the command line: printed as `Error: ...`, the usage, and a hint; exit code 64.
struct UsageError: Error {
    var message: String
    init(_ message: String) { self.message = message }
}

/// Parsed command line: positionals in order, option values by long name, flags present.
struct ParsedArguments {
    var positionals: [String] = []
    var values: [String: String] = [:]
    /// Every value of options given more than once (`--key a --key b`), in order.
    var repeated: [String: [String]] = [:]
    var flags: Set<String> = []
    var wantsHelp = false

    func value(_ long: String) -> String? { values[long] }
    func allValues(_ long: String) -> [String] { repeated[long] ?? [] }
    func flag(_ long: String) -> Bool { flags.contains(long) }

    /// A whole number option within `range`, or nil when absent.
    func int(_ long: String, in range: ClosedRange<Int>, spec: CommandSpec) throws(UsageError) -> Int? {
        guard let raw = values[long] else { return nil }
        let label = spec.options.first { $0.long == long }.flatMap { $0.valueName.map { "<\($0)>" } } ?? ""
        guard let n = Int(raw), range.contains(n) else {
            throw UsageError("The value '\(raw)' is invalid for '--\(long) \(label)': expected a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
        return n
    }
}

enum ArgumentParser {
    /// Parses `args` (without the program and command names) against `spec`.
    static func parse(_ args: [String], _ spec: CommandSpec) throws(UsageError) -> ParsedArguments {
        var parsed = ParsedArguments()
        var i = 0
        var onlyPositionals = false
        while i < args.count {
            let arg = args[i]
            i += 1
            if onlyPositionals || !arg.hasPrefix("-") || arg == "-" {
                parsed.positionals.append(arg)
                continue
            }
            if arg == "--" {
                onlyPositionals = true
                continue
            }
            if arg == "--help" || arg == "-h" {
                parsed.wantsHelp = true
                continue
            }
            var name: String
            var inlineValue: String?
            let option: CommandSpec.Option?
            if arg.hasPrefix("--") {
                name = String(arg.dropFirst(2))
                if let eq = name.firstIndex(of: "=") {
                    inlineValue = String(name[name.index(after: eq)...])
                    name = String(name[..<eq])
                }
                option = spec.options.first { $0.long == name }
            } else {
                let short = arg.dropFirst()
                option = short.count == 1 ? spec.options.first { $0.short == short.first } : nil
                name = option?.long ?? String(short)
            }
            guard let option else { throw UsageError("Unknown option '\(arg)'") }
            if let valueName = option.valueName {
                if let inlineValue {
                    parsed.values[option.long] = inlineValue
                    parsed.repeated[option.long, default: []].append(inlineValue)
                } else if i < args.count {
                    parsed.values[option.long] = args[i]
                    parsed.repeated[option.long, default: []].append(args[i])
                    i += 1
                } else {
                    throw UsageError("Missing value for '--\(option.long) <\(valueName)>'")
                }
            } else {
                if inlineValue != nil { throw UsageError("The flag '--\(option.long)' does not take a value") }
                parsed.flags.insert(option.long)
            }
        }
        if parsed.wantsHelp { return parsed }
        // Check positionals against the spec.
        let required = spec.positionals.filter { !$0.isOptional }
        if parsed.positionals.count < required.count {
            let missing = required[parsed.positionals.count]
            throw UsageError("Missing expected argument '<\(missing.name)>'")
        }
        let repeating = spec.positionals.contains { $0.isRepeating }
        if !repeating && parsed.positionals.count > spec.positionals.count {
            throw UsageError("Unexpected argument '\(parsed.positionals[spec.positionals.count])'")
        }
        return parsed
    }
}
