import Glibc

/// Where the broker's socket is, for every command and the library alike.
public enum SocketPath {
    /// `explicit` (a `--socket` flag or a config value), else `$EVBUS_SOCKET`, else
    /// `$XDG_RUNTIME_DIR/evbus.sock`, else `/tmp/evbus-<uid>.sock`.
    public static func resolve(_ explicit: String? = nil) -> String {
        if let explicit, !explicit.isEmpty { return explicit }
        if let env = environment("EVBUS_SOCKET"), !env.isEmpty { return env }
        if let runtime = environment("XDG_RUNTIME_DIR"), !runtime.isEmpty { return runtime + "/evbus.sock" }
        return "/tmp/evbus-\(getuid()).sock"
    }

    static func environment(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        return String(cString: value)
    }
}
