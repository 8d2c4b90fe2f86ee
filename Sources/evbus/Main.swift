import Glibc

@main
struct EvbusMain {
    static func main() async {
        let code = await CLI.run(Array(CommandLine.arguments.dropFirst()))
        exit(code)
    }
}
