import Foundation

/// A real, small filesystem (a tmpfs with a size limit) mounted for one test, to fill up on purpose.
/// Needs root (CI runs as root); `unmount` removes it and its mount point.
public final class SmallFilesystem: Sendable {
    public let path: String

    /// Mounts a tmpfs of `size` (as mount(8) spells it: "256k", "1m") on a fresh directory.
    public init(size: String, tag: String = "fs") async throws {
        path = TestPaths.dataDirectory(tag)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let mount = try RunningProcess("/bin/mount", ["-t", "tmpfs", "-o", "size=\(size)", "tmpfs", path])
        guard await mount.waitForExit() == 0 else {
            try? FileManager.default.removeItem(atPath: path)
            throw TestSupportError("mount failed: \(mount.stderr)")
        }
    }

    /// Bytes free on it now.
    public var freeBytes: Int {
        var fs = statvfs()
        statvfs(path, &fs)
        return Int(fs.f_bavail) * Int(fs.f_bsize)
    }

    public func unmount() {
        umount(path)
        try? FileManager.default.removeItem(atPath: path)
    }
}
