/// The RabbitMQ RPC tutorial's function, deliberately slow (exponential recursion) so that a large
/// `n` is real CPU work — which is why the server runs it on a worker pool.
enum Fib {
    /// Largest n served: fib(45) takes several seconds this way; larger ones would take minutes.
    static let maxN = 45

    static func compute(_ n: Int) -> UInt64 {
        n < 2 ? UInt64(n) : compute(n - 1) + compute(n - 2)
    }

    /// The request payload as n, or why not (becomes a remote error, never a crash).
    static func parse(_ text: String) -> Result<Int, FibInputError> {
        let trimmed = text.trimmingWhitespace()
        guard let n = Int(trimmed) else { return .failure(FibInputError("not a number: \"\(trimmed)\"")) }
        guard n >= 0 else { return .failure(FibInputError("n must not be negative, got \(n)")) }
        guard n <= maxN else { return .failure(FibInputError("n must be at most \(maxN), got \(n)")) }
        return .success(n)
    }
}

struct FibInputError: Error {
    var message: String
    init(_ message: String) { self.message = message }
}

extension String {
    func trimmingWhitespace() -> String {
        String(drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}
