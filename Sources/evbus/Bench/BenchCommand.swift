struct BenchCommand: EvbusCommand { static let spec = CommandSpec(name: "bench", abstract: "x"); init(_ a: ParsedArguments) throws(UsageError) {}; func run() async throws -> Int32 { 0 } }
