@testable import EvbusNATS
import Testing

@Suite struct NATSParserTests {
    /// An operation, with a message copied out of the parser's buffer (valid only until `next()`).
    enum Op: Equatable {
        case other(NATSServerOp)
        case msg(NATSMessage)
        static let ping = Op.other(.ping), pong = Op.other(.pong), ok = Op.other(.ok)
        static func err(_ s: String) -> Op { .other(.err(s)) }
    }

    func ops(_ chunks: [String]) throws -> [Op] {
        var p = NATSParser()
        var out: [Op] = []
        for c in chunks {
            p.append(Array(c.utf8))
            while let op = try p.next() {
                if case .msg(let layout) = op { out.append(.msg(p.withView(layout) { $0.message() })) } else { out.append(.other(op)) }
            }
        }
        return out
    }

    @Test func controlLinesAndMessagesInAnySplit() throws {
        let stream = "INFO {\"server_id\":\"x\",\"max_payload\":1048576,\"headers\":true,\"connect_urls\":[\"10.0.0.2:4222\"]}\r\nPING\r\n+OK\r\nMSG a.b 7 5\r\nhello\r\nMSG a.c 8 _INBOX.1 0\r\n\r\nHMSG a.d 9 22 27\r\nNATS/1.0\r\nX-Id: 42\r\n\r\nhello\r\nPONG\r\n-ERR 'Authorization Violation'\r\n"
        let whole = try ops([stream])
        for size in [1, 2, 3, 7, 13] {
            var chunks: [String] = []
            var rest = Substring(stream)
            while !rest.isEmpty {
                chunks.append(String(rest.prefix(size)))
                rest = rest.dropFirst(size)
            }
            #expect(try ops(chunks) == whole, "split every \(size) bytes")
        }
        #expect(whole.count == 8)
        guard case .other(.info(let fields, let urls)) = whole[0] else { Issue.record("no INFO"); return }
        #expect(fields["server_id"] == "x" && fields["max_payload"] == "1048576" && urls == ["10.0.0.2:4222"])
        #expect(whole[1] == .ping && whole[2] == .ok && whole[6] == .pong && whole[7] == .err("Authorization Violation"))
        #expect(whole[3] == .msg(NATSMessage(subject: "a.b", sid: 7, payload: Array("hello".utf8))))
        #expect(whole[4] == .msg(NATSMessage(subject: "a.c", sid: 8, replyTo: "_INBOX.1", payload: [])))
        guard case .msg(let h) = whole[5] else { Issue.record("no HMSG"); return }
        #expect(h.headers?["x-id"] == "42" && h.payload == Array("hello".utf8))
    }

    @Test func aNoRespondersStatusIsParsed() throws {
        let op = try ops(["HMSG _INBOX.a.1 3 30 30\r\nNATS/1.0 503 No Responders\r\n\r\n\r\n"])
        guard case .msg(let m) = op.first else { Issue.record("no HMSG"); return }
        #expect(m.headers?.status == 503 && m.headers?.statusDescription == "No Responders" && m.payload.isEmpty)
    }

    @Test func headersRoundTripAndRefuseLineBreaks() throws {
        let h = NATSHeaders(fields: [("Evbus-Origin", "bridge-a"), ("content-type", "text/plain")])
        let bytes = try h.encoded()
        #expect(try bytes.withUnsafeBytes { try NATSHeaders.parse($0) } == h)
        #expect(throws: NATSError.self) { try NATSHeaders(fields: [("a", "b\r\nc: d")]).encoded() }
        #expect(throws: NATSError.self) { try NATSHeaders(fields: [("a:b", "c")]).encoded() }
    }

    /// One line at a time, for a caller building its own block: a line break in a value would
    /// be a second field of the value's choosing.
    @Test func aLineAppendedIsOneFieldOrRefused() throws {
        var block = Array("NATS/1.0\r\n".utf8)
        try NATSHeaders.appendLine(name: "Evbus-Origin", value: "a b: c", to: &block)
        block += Array("\r\n".utf8)
        #expect(try block.withUnsafeBytes { try NATSHeaders.parse($0) }.fields.map(\.value) == ["a b: c"])
        for (name, value) in [("a", "b\r\nForged: x"), ("a", "b\nc"), ("a", "b\rc"), ("a:b", "c"), ("a b", "c"), ("", "c"), ("a\r\nB", "c")] {
            var out: [UInt8] = []
            #expect(throws: NATSError.self, "\(name.debugDescription): \(value.debugDescription)") {
                try NATSHeaders.appendLine(name: name, value: value, to: &out)
            }
            #expect(out.isEmpty)
        }
    }

    @Test func brokenStreamsAreRefused() {
        for bad in ["WHAT\r\n", "MSG a\r\n", "MSG a b 5\r\nhello\r\n", "MSG a 1 3\r\nhelloXX", "INFO not json\r\n", "HMSG a 1 9 3\r\nabc\r\n",
                    "HMSG a 1 17 17\r\nNATS/1.0\r\nbad\r\n\r\n\r\n", "HMSG a 1 12 12\r\nNATS/2.0\r\n\r\n\r\n"] {
            #expect(throws: NATSError.self, "\(bad)") { _ = try ops([bad]) }
        }
    }

    @Test func aViewShowsTheMessageWhereItLies() throws {
        var p = NATSParser()
        p.append(Array("HMSG s.t 4 reply.x 37 40\r\nNATS/1.0\r\nA-Key:  one\r\nb-key: two\r\n\r\nabc\r\nMSG u 5 2\r\nhi\r\n".utf8))
        guard case .msg(let layout) = try p.next() else { Issue.record("no HMSG"); return }
        p.withView(layout) { v in
            #expect(v.sid == 4 && Array(v.subject) == Array("s.t".utf8) && v.replyTo.map(Array.init) == Array("reply.x".utf8))
            #expect(Array(v.payload) == Array("abc".utf8))
            var fields: [String] = []
            v.forEachHeader { n, value in fields.append(String(decoding: n, as: UTF8.self) + "=" + String(decoding: value, as: UTF8.self)) }
            #expect(fields == ["A-Key=one", "b-key=two"])
            #expect(v.header("B-KEY").map(Array.init) == Array("two".utf8) && v.header("c-key") == nil && v.header("a-ke") == nil)
        }
        guard case .msg(let plain) = try p.next() else { Issue.record("no MSG"); return }
        p.withView(plain) { v in
            #expect(v.headerBlock.isEmpty && v.replyTo == nil && Array(v.payload) == Array("hi".utf8))
            var any = false
            v.forEachHeader { _, _ in any = true }
            #expect(!any && v.message() == NATSMessage(subject: "u", sid: 5, payload: Array("hi".utf8)))
        }
    }

    @Test func aHeaderBlockMadeByTheCallerIsCheckedBeforeSending() throws {
        func check(_ s: String) throws { try Array(s.utf8).withUnsafeBytes { try NATSFrame.checkHeaderBlock($0) } }
        try check("NATS/1.0\r\n\r\n")
        try check("NATS/1.0\r\nA: b\r\nEvbus-Origin: x y\r\n\r\n")
        try check(String(decoding: try NATSHeaders(fields: [("k", "v:w"), ("Ünï", "")]).encoded(), as: UTF8.self))
        for bad in ["", "NATS/1.0\r\n", "NATS/2.0\r\n\r\n", "NATS/1.0\r\nA: b\r\n", "NATS/1.0\r\nA: b\nC: d\r\n\r\n",
                    "NATS/1.0\r\nA: b\rc\r\n\r\n", "NATS/1.0\r\nno colon\r\n\r\n", "NATS/1.0\r\n: empty name\r\n\r\n",
                    "NATS/1.0\r\nA b: c\r\n\r\n", "NATS/1.0\r\nA: b\r\n\r\nextra"] {
            #expect(throws: NATSError.self, "\(bad.debugDescription)") { try check(bad) }
        }
        for bad in ["", "a..b", "a b", "a.*", "a.>", "a\r\n"] {
            #expect(throws: NATSError.self, "\(bad)") { try Array(bad.utf8).withUnsafeBytes { try NATSFrame.checkSubject($0, wildcards: false) } }
        }
    }
}
