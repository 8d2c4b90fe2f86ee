import EvbusWire

/// Identity on every delivery (PROTOCOL.md §5.15): before the first DELIVER or MESSAGE from a
/// publisher, a connection that asked for it in HELLO gets one SENDER frame saying who that
/// publisher is, as the kernel told the broker. It is per (receiver, publisher), not per message:
/// a delivery costs one compare with the receiver's last publisher.
extension BrokerCore {
    /// Publishers one connection remembers having announced; past this it starts over, telling
    /// the client to forget its earlier ones (`SenderFlag.forgetEarlier`), so both sides stay bounded.
    public static var announcedLimit: Int { 1024 }

    /// Makes sure `receiver` knows who `publisherID` is before a delivery from it. `publisher` is
    /// that connection if the caller has it at hand (a live publish). Cold: the caller checks
    /// `receiver.lastSender` first.
    @inline(never)
    func announceSender(_ publisherID: UInt64, publisher: ConnectionState?, to receiver: ConnectionState) {
        receiver.lastSender = publisherID
        guard receiver.wantsSenders, publisherID != 0, !receiver.announcedSenders.contains(publisherID) else { return }
        var flags: UInt8 = 0
        if receiver.announcedSenders.count >= Self.announcedLimit {
            receiver.announcedSenders.removeAll()
            flags |= SenderFlag.forgetEarlier
        }
        receiver.announcedSenders.insert(publisherID)
        // Unknown (published before a restart, or by a connection long gone): nothing is sent,
        // and the client shows no sender.
        guard let who = senderIdentity(publisherID, publisher) else { return }
        send(.sender(publisher: publisherID, uid: who.identity.uid, gid: who.identity.gid, pid: who.identity.pid, name: who.name, flags: flags), to: receiver)
    }

    func senderIdentity(_ id: UInt64, _ publisher: ConnectionState?) -> (identity: PeerIdentity, name: String)? {
        if let publisher, publisher.id == id { return (publisher.identity, publisher.name) }
        if let slot = slotsByID[id], let s = session(slot) { return (s.identity, s.name) }
        return retiredSenders.lookup(id)
    }
}

/// Who closed connections were, for messages they left in queues: bounded, oldest forgotten first.
struct RetiredSenders {
    static let limit = 65_536
    private var byID: [UInt64: (identity: PeerIdentity, name: String)] = [:]
    private var order = RingBuffer<UInt64>(capacity: 0)

    mutating func retire(_ id: UInt64, identity: PeerIdentity, name: String) {
        if byID.count >= Self.limit, let oldest = order.popFirst() { byID[oldest] = nil }
        byID[id] = (identity, name)
        order.append(id)
    }

    func lookup(_ id: UInt64) -> (identity: PeerIdentity, name: String)? { byID[id] }
}
