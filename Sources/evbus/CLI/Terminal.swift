import Glibc

/// Unbuffered output: each call is one `write(2)`, so a line reaches a pipe at once.
/// (Swift's `print` goes through a block-buffered stdout when piped, and `stderr` is not usable
/// under strict concurrency.)
enum Terminal {
    static func out(_ text: String) { write(STDOUT_FILENO, text) }
    static func err(_ text: String) { write(STDERR_FILENO, text) }

    static func write(_ fd: Int32, _ text: String) {
        var text = text
        text.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let n = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    return
                }
                offset += n
            }
        }
    }
}

/// Exit codes, as sysexits(3) names them.
enum ExitCode {
    static let success: Int32 = 0
    /// The command ran and failed (broker unreachable, request refused, ...).
    static let failure: Int32 = 1
    /// The command line was wrong.
    static let usage: Int32 = 64
    /// A config file was wrong.
    static let config: Int32 = 78
}
