/// Reading logfmt lines back, for tests of what the broker and the bridge log.
public enum Logfmt {
    /// Splits a logfmt line into its keys and values, undoing `Logger.quoted`.
    public static func fields(_ line: String) -> [(String, String)] {
        var out: [(String, String)] = []
        var rest = Substring(line)
        while !rest.isEmpty {
            rest = rest.drop { $0 == " " }
            guard let eq = rest.firstIndex(of: "=") else { break }
            let key = String(rest[..<eq])
            rest = rest[rest.index(after: eq)...]
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                while let c = rest.first {
                    rest = rest.dropFirst()
                    if c == "\\", let e = rest.first {
                        rest = rest.dropFirst()
                        value.append(e == "n" ? "\n" : e)
                    } else if c == "\"" {
                        break
                    } else {
                        value.append(c)
                    }
                }
            } else {
                let end = rest.firstIndex(of: " ") ?? rest.endIndex
                value = String(rest[..<end])
                rest = rest[end...]
            }
            out.append((key, value))
        }
        return out
    }
}
