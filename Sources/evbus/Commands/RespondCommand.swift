import Evbus
import Foundation
import Synchronization

/// `evbus respond QUEUE --exec COMMAND`: answers each request with a shell command's output.
struct RespondCommand: EvbusCommand {
    static let spec = CommandSpec(
        name: "respond",
        abstract: "Answer requests on a queue with the output of a shell command.",
        discussion: """
            Each request runs COMMAND with /bin/sh -c, the request's payload on standard input; its
            standard output is the reply. A non-zero exit status sends a remote error instead (code
            exit-<status>, message: its standard error, or the status). The queue is declared if it
            does not exist. Runs until Ctrl-C, or until --count requests were answered.
            If the broker restarts, respond reconnects and serves the queue again (saying so on
            stderr); with --no-reconnect it exits with status 1.
            """,
        positionals: [.init(name: "queue", help: "The queue to serve.")],
        options: [
            CommandSpec.socketOption,
            .init(long: "exec", short: "x", valueName: "command", help: "The shell command that answers (required)."),
            .init(long: "prefetch", short: nil, valueName: "n", help: "Requests handled at once (default 1)."),
            .init(long: "count", short: "n", valueName: "n", help: "Exit after answering <n> requests."),
            LongRunningPeer.option,
        ])

    var queue: String
    var command: String
    var prefetch: Int
    var count: Int?
    var socket: String?
    var reconnect: Bool

    init(_ a: ParsedArguments) throws(UsageError) {
        queue = a.positionals[0]
        guard let command = a.value("exec"), !command.isEmpty else { throw UsageError("Missing '--exec <command>'") }
        self.command = command
        prefetch = try a.int("prefetch", in: 1...Int(UInt16.max), spec: Self.spec) ?? 1
        count = try a.int("count", in: 1...Int.max, spec: Self.spec)
        socket = a.value("socket")
        reconnect = !a.flag("no-reconnect")
    }

    func run() async throws -> Int32 {
        let stop = TerminationSignals()
        let lost = Mutex<EvbusError?>(nil)
        let trigger = stop.trigger
        let peer = try await LongRunningPeer.connect(socket: socket, name: "evbus respond", reconnect: reconnect) { error in
            lost.withLock { $0 = error }
            trigger.fire("connection lost")
        }
        let command = self.command
        let count = self.count
        let answered = Atomic<Int>(0)
        let responder: Responder
        do {
            responder = try await peer.respond(on: queue, prefetch: prefetch) { (request: Request) -> [UInt8] in
                defer {
                    if answered.add(1, ordering: .relaxed).newValue == count { trigger.fire("answered \(count!)") }
                }
                let result = await Shell.run(command, input: request.payload)
                guard result.status == 0 else {
                    let stderr = String(decoding: result.stderr, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                    throw RemoteError("exit-\(result.status)", stderr.isEmpty ? "the command exited with status \(result.status)" : stderr)
                }
                return result.stdout
            }
        } catch {
            await peer.close()
            throw error
        }
        Terminal.err("evbus respond: answering requests on \(queue) with: \(command)\n")
        // Until Ctrl-C, a lost connection, or the count-th handler returns; then its reply, sent
        // just after, is let out before the peer closes (a handler or two's tail, not a poll).
        if await stop.wait().hasPrefix("answered"), let count {
            while responder.handled < count && lost.withLock({ $0 }) == nil { try await Task.sleep(for: .milliseconds(1)) }
        }
        try? await responder.cancel()
        await peer.close()
        if let error = lost.withLock({ $0 }) { throw error }
        return ExitCode.success
    }
}

/// Runs a shell command off the cooperative pool (its blocking reads would starve it).
enum Shell {
    struct Result: Sendable {
        var status: Int32
        var stdout: [UInt8]
        var stderr: [UInt8]
    }

    static func run(_ command: String, input: [UInt8]) async -> Result {
        await withCheckedContinuation { (c: CheckedContinuation<Result, Never>) in
            Thread.detachNewThread {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: "/bin/sh")
                p.arguments = ["-c", command]
                let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
                p.standardInput = stdin
                p.standardOutput = stdout
                p.standardError = stderr
                do {
                    try p.run()
                } catch {
                    c.resume(returning: Result(status: 127, stdout: [], stderr: Array("cannot run /bin/sh: \(error)".utf8)))
                    return
                }
                // Collect stderr on its own thread so neither pipe can fill up and block the command.
                let errBox = Mutex<[UInt8]>([])
                let errDone = DispatchSemaphore(value: 0)
                Thread.detachNewThread {
                    let data = stderr.fileHandleForReading.readDataToEndOfFile()
                    errBox.withLock { $0 = Array(data) }
                    errDone.signal()
                }
                try? stdin.fileHandleForWriting.write(contentsOf: Data(input))
                try? stdin.fileHandleForWriting.close()
                let out = Array(stdout.fileHandleForReading.readDataToEndOfFile())
                errDone.wait()
                p.waitUntilExit()
                c.resume(returning: Result(status: p.terminationStatus, stdout: out, stderr: errBox.withLock { $0 }))
            }
        }
    }
}
