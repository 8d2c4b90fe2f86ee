/// The one-byte frame type that follows every frame's length.
public enum FrameType: UInt8, Sendable, CaseIterable {
    case hello = 0x01
    case welcome = 0x02
    case ping = 0x03
    case pong = 0x04
    case close = 0x05
    case error = 0x06
    case ok = 0x07
    case publish = 0x10
    case subscribe = 0x11
    case unsubscribe = 0x12
    case deliver = 0x13
    case sender = 0x14
    case stats = 0x20
    case statsReply = 0x21
    case topology = 0x22
    case topologyReply = 0x23
    case connections = 0x24
    case connectionsReply = 0x25
    case declareExchange = 0x30
    case deleteExchange = 0x31
    case declareQueue = 0x32
    case queueOK = 0x33
    case deleteQueue = 0x34
    case purgeQueue = 0x35
    case bind = 0x36
    case unbind = 0x37
    case publishTo = 0x40
    case consume = 0x41
    case cancel = 0x42
    case message = 0x43
    case ack = 0x44
    case nack = 0x45
    case confirm = 0x46
    case returned = 0x47
    case routed = 0x48

    /// Frames only the broker sends; a client sending one is a protocol violation.
    public var isBrokerOnly: Bool {
        switch self {
        case .welcome, .error, .ok, .deliver, .sender, .statsReply, .topologyReply, .connectionsReply, .queueOK, .message, .confirm,
            .returned, .routed: true
        case .hello, .ping, .pong, .close, .publish, .subscribe, .unsubscribe, .stats, .topology, .connections, .declareExchange,
            .deleteExchange, .declareQueue, .deleteQueue, .purgeQueue, .bind, .unbind, .publishTo, .consume, .cancel,
            .ack, .nack: false
        }
    }
}

/// Flag bits of HELLO's optional last byte.
public enum HelloFlag {
    /// Send SENDER frames: who each publisher is, once per publisher, before its first delivery.
    public static let senders: UInt8 = 0x01
    public static let defined: UInt8 = 0x01
}

/// Flag bits of SENDER.
public enum SenderFlag {
    /// Forget every SENDER received before this one (the broker bounds how many it remembers
    /// having sent; it sends again what is needed after this).
    public static let forgetEarlier: UInt8 = 0x01
}

/// SUBSCRIBE's optional last byte: what the broker does with this subscription's deliveries while
/// its connection's output is over the high watermark (PROTOCOL.md §8).
public enum SlowPolicyCode {
    /// The broker's `slowConsumerPolicy`.
    public static let brokerDefault: UInt8 = 0
    public static let backpressure: UInt8 = 1
    public static let drop: UInt8 = 2
    public static let disconnect: UInt8 = 3
}
