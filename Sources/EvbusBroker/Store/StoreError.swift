import Glibc

/// Why the store could not do what it was asked; `isDiskFull` is the one a broker reports to
/// publishers specially (their persistent messages are refused until space returns).
public struct StoreError: Error, Equatable, Sendable, CustomStringConvertible {
    public var call: String
    public var path: String
    public var errno: Int32

    public init(_ call: String, path: String, errno: Int32) {
        self.call = call
        self.path = path
        self.errno = errno
    }

    public var isDiskFull: Bool { errno == ENOSPC || errno == EDQUOT }

    public var description: String { "\(call) \(path): \(String(cString: strerror(errno))) (errno \(errno))" }
}
