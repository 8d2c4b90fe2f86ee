import Evbus

/// The message-property options `pub` shares between topic and exchange publishing.
enum MessageOptions {
    static let specs: [CommandSpec.Option] = [
        .init(long: "content-type", short: nil, valueName: "type", help: "Content type property, e.g. application/json."),
        .init(long: "correlation-id", short: nil, valueName: "id", help: "Correlation id property."),
        .init(long: "reply-to", short: nil, valueName: "address", help: "Reply-to property."),
        .init(long: "message-id", short: nil, valueName: "id", help: "Message id property."),
        .init(long: "expiration", short: nil, valueName: "ms", help: "Per-message TTL in milliseconds (queues only)."),
        .init(long: "header", short: nil, valueName: "name=value", help: "A header; repeat for more."),
        .init(long: "persistent", short: nil, valueName: nil, help: "Persistent: durable queues keep it across broker restarts."),
    ]

    static func parse(_ a: ParsedArguments, spec: CommandSpec) throws(UsageError) -> MessageProperties {
        var p = MessageProperties()
        p.contentType = a.value("content-type")
        p.correlationID = a.value("correlation-id")
        p.replyTo = a.value("reply-to")
        p.messageID = a.value("message-id")
        if let ms = try a.int("expiration", in: 0...Int(UInt32.max - 1), spec: spec) { p.expiration = UInt32(ms) }
        p.persistent = a.flag("persistent")
        for header in a.allValues("header") {
            guard let eq = header.firstIndex(of: "="), eq != header.startIndex else {
                throw UsageError("'--header \(header)' must look like name=value")
            }
            p.headers[String(header[..<eq])] = String(header[header.index(after: eq)...])
        }
        return p
    }
}
