/// Who a connection is, as the kernel said when it connected (`SO_PEERCRED`, `SO_PEERGROUPS`),
/// and the name it gave in HELLO (free text, for people: never used for a decision).
public struct PeerIdentity: Sendable, Equatable {
    public var uid: UInt32
    public var gid: UInt32
    public var pid: UInt32
    /// Supplementary groups of the connecting process.
    public var groups: [UInt32]

    public init(uid: UInt32, gid: UInt32, pid: UInt32, groups: [UInt32] = []) {
        self.uid = uid
        self.gid = gid
        self.pid = pid
        self.groups = groups
    }

    /// What a connection whose credentials could not be read is taken to be: nobody
    /// (uid and gid 65534), which no rule written for a real user grants anything.
    public static let unknown = PeerIdentity(uid: 65534, gid: 65534, pid: 0)

    public func isMember(of gid: UInt32) -> Bool { self.gid == gid || groups.contains(gid) }
}
