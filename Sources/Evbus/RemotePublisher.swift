/// Who published a message on another machine, as that machine's broker saw it (its kernel's
/// `SO_PEERCRED`, like `Sender`): the NATS bridge (docs/BRIDGE.md) carries it across as one header,
/// `Evbus-Publisher: uid=1000 gid=1000 pid=4242 name=thermometer`, and a message it imports keeps
/// that header. One line, not one per field: on a 16-byte message the identity is most of the
/// bytes every hop copies (docs/BENCHMARKS.md, the bridge's third sitting).
///
/// The values are only as trustworthy as the bridges and the NATS account between the machines:
/// any NATS client may publish such a header.
public struct RemotePublisher: Sendable, Hashable, CustomStringConvertible {
    /// The header's name.
    public static let header = "Evbus-Publisher"

    public var uid: UInt32
    public var gid: UInt32
    public var pid: UInt32
    /// The name it gave in HELLO (may be empty): free text, last in the header.
    public var name: String

    public init(uid: UInt32, gid: UInt32, pid: UInt32, name: String) {
        self.uid = uid
        self.gid = gid
        self.pid = pid
        self.name = name
    }

    /// The identity a local publisher leaves with.
    public init(_ sender: Sender) {
        self.init(uid: sender.uid, gid: sender.gid, pid: sender.pid, name: sender.name)
    }

    /// The publisher a message's `Evbus-Publisher` header names; nil when it has none, or one
    /// that is not of the form above.
    public init?(of properties: MessageProperties) {
        guard let value = properties.headers[Self.header] else { return nil }
        self.init(headerValue: value)
    }

    /// Parses `uid=U gid=G pid=P`, optionally followed by ` name=` and the rest of the line
    /// (a name may hold spaces and '='). Decimal digits only; nil for anything else.
    public init?(headerValue: String) {
        var rest = Substring(headerValue)
        func number(_ key: String) -> UInt32? {
            guard rest.hasPrefix(key) else { return nil }
            rest = rest.dropFirst(key.count)
            let digits = rest.prefix { $0.isASCII && $0.isNumber }
            rest = rest.dropFirst(digits.count)
            return digits.isEmpty ? nil : UInt32(digits)
        }
        guard let uid = number("uid="), let gid = number(" gid="), let pid = number(" pid=") else { return nil }
        let name: Substring
        if rest.isEmpty {
            name = ""
        } else if rest.hasPrefix(" name=") {
            name = rest.dropFirst(" name=".count)
        } else {
            return nil
        }
        self.init(uid: uid, gid: gid, pid: pid, name: String(name))
    }

    /// The header's value; ` name=…` is left out when the name is empty.
    public var headerValue: String { "uid=\(uid) gid=\(gid) pid=\(pid)" + (name.isEmpty ? "" : " name=\(name)") }

    public var description: String { headerValue }
}
