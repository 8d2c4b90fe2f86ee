import Evbus
import Testing

/// The one-line identity header a bridge gives exported messages (docs/BRIDGE.md, "Mapping").
@Suite struct RemotePublisherTests {
    @Test func aPublisherSurvivesTheHeaderBothWays() {
        let named = RemotePublisher(uid: 1000, gid: 100, pid: 4242, name: "thermometer")
        #expect(named.headerValue == "uid=1000 gid=100 pid=4242 name=thermometer")
        #expect(RemotePublisher(headerValue: named.headerValue) == named)
        let unnamed = RemotePublisher(uid: 0, gid: 0, pid: 1, name: "")
        #expect(unnamed.headerValue == "uid=0 gid=0 pid=1")
        #expect(RemotePublisher(headerValue: unnamed.headerValue) == unnamed)
        // A name is free text: spaces and '=' are its own, to the end of the line.
        let odd = RemotePublisher(uid: UInt32.max, gid: 7, pid: 9, name: "kitchen sensor pid=1 =")
        #expect(RemotePublisher(headerValue: odd.headerValue) == odd)
    }

    @Test func itIsMadeFromASenderAndReadFromProperties() {
        let sender = Sender(connectionID: 12, uid: 5, gid: 6, pid: 7, name: "pump")
        let publisher = RemotePublisher(sender)
        #expect(publisher == RemotePublisher(uid: 5, gid: 6, pid: 7, name: "pump"))
        var p = MessageProperties()
        #expect(RemotePublisher(of: p) == nil)
        p.headers[RemotePublisher.header] = publisher.headerValue
        #expect(RemotePublisher(of: p) == publisher)
    }

    @Test(arguments: [
        "", "uid=1", "uid=1 gid=2", "gid=2 uid=1 pid=3", "uid=1 gid=2 pid=", "uid=+1 gid=2 pid=3",
        "uid=1 gid=2 pid=3 ", "uid=1 gid=2 pid=3 nom=x", "uid=4294967296 gid=2 pid=3", "uid=1 gid=٢ pid=3",
        " uid=1 gid=2 pid=3", "uid=1  gid=2 pid=3",
    ])
    func anythingElseIsNoPublisher(_ value: String) {
        #expect(RemotePublisher(headerValue: value) == nil, "\(value)")
    }
}
