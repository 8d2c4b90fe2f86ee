import Glibc

@main
struct EvbusMain {
    static func main() async {
        // A child that exits without reading its stdin (`evbus respond --exec 'echo hi'`) must make
        // the write fail with EPIPE, not kill this process.
        signal(SIGPIPE, SIG_IGN)
        let code = await CLI.run(Array(CommandLine.arguments.dropFirst()))
        exit(code)
    }
}
