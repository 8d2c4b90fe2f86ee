import Foundation

/// Runs the real `evbus` binary as another user: tests run as root, and `setpriv` (util-linux)
/// forks, drops to the given uid, gid and groups (setgroups, setgid, setuid) and execs it, so
/// the broker sees a kernel identity the test did not choose for itself. The uids are unused
/// numbers: rules by number need no user accounts.
public enum OtherUser {
    /// Uids and gids no account on a test machine has.
    public static let uid: UInt32 = 54321
    public static let secondUID: UInt32 = 54322
    public static let group: UInt32 = 54400

    /// A copy of the `evbus` binary that any user may run (the build folder may not be
    /// reachable by others), made once per test process.
    static let binary: String = {
        let dir = TestPaths.file("bin")
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        let copy = dir + "/evbus"
        try? FileManager.default.removeItem(atPath: copy)
        try? FileManager.default.copyItem(atPath: TestPaths.evbusBinary, toPath: copy)
        chmod(dir, 0o755)
        chmod(copy, 0o755)
        return copy
    }()

    static func arguments(uid: UInt32, gid: UInt32, groups: [UInt32], _ evbusArguments: [String]) -> [String] {
        let groupArgument = groups.isEmpty ? "--clear-groups" : "--groups=" + groups.map(String.init).joined(separator: ",")
        return ["--reuid=\(uid)", "--regid=\(gid)", groupArgument, binary] + evbusArguments
    }

    /// Starts `evbus <arguments>` as `uid`/`gid` with supplementary `groups`.
    public static func start(uid: UInt32 = OtherUser.uid, gid: UInt32? = nil, groups: [UInt32] = [], _ arguments: [String]) throws -> RunningProcess {
        try RunningProcess("/usr/bin/setpriv", Self.arguments(uid: uid, gid: gid ?? uid, groups: groups, arguments))
    }

    /// Runs `evbus <arguments>` as another user to completion.
    public static func run(uid: UInt32 = OtherUser.uid, gid: UInt32? = nil, groups: [UInt32] = [], _ arguments: [String], seconds: Double = 30)
        async throws -> (status: Int32, stdout: String, stderr: String)
    {
        let p = try start(uid: uid, gid: gid, groups: groups, arguments)
        p.closeStdin()
        let status = await p.waitForExit(seconds: seconds)
        return (status, p.stdout, p.stderr)
    }
}
