// swift-tools-version: 6.2
import PackageDescription

/// Settings every target shares: Swift 6 strict concurrency, explicit imports, warnings as errors.
let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .treatAllWarnings(as: .error),
]

let package = Package(
    name: "evbus",
    products: [
        .library(name: "Evbus", targets: ["Evbus"]),
        .executable(name: "evbus", targets: ["evbus"]),
        .executable(name: "evbus-fib", targets: ["evbus-fib"]),
    ],
    targets: [
        // Headers and one-line wrappers for what glibc hides from Swift (epoll, eventfd, timerfd, ucred, accept4).
        .target(name: "CEvbusLinux"),
        // Frames, codec, error codes, topic rules: pure values, no I/O.
        .target(name: "EvbusWire", swiftSettings: strict),
        // The epoll reactor, Unix sockets, write queues and timers. Knows bytes, not frames.
        .target(name: "EvbusIO", dependencies: ["CEvbusLinux"], swiftSettings: strict),
        // Routing core (pure) and the server glue between it and EvbusIO.
        .target(name: "EvbusBroker", dependencies: ["EvbusWire", "EvbusIO"], swiftSettings: strict),
        // The serial event loop (controller), Pending results, timers, pools, your own sockets on its loop. Needs no broker.
        .target(name: "EvbusController", dependencies: ["EvbusIO", "CEvbusLinux"], swiftSettings: strict),
        // A NATS client (text protocol with headers, reconnects, requests): the bridge's, and the bench's.
        .target(name: "EvbusNATS", dependencies: ["EvbusController"], swiftSettings: strict),
        // The evbus ⇄ NATS bridge: an evbus peer and a NATS client (`evbus bridge`).
        .target(name: "EvbusBridge", dependencies: ["Evbus", "EvbusNATS", "EvbusIO"], swiftSettings: strict),
        // The peer library applications import.
        .target(name: "Evbus", dependencies: ["EvbusWire", "EvbusIO", "EvbusController"], swiftSettings: strict),
        // Starts real brokers (the `evbus` binary or in-process) for tests.
        .target(name: "EvbusTestSupport", dependencies: ["Evbus", "EvbusBroker", "EvbusIO", "EvbusWire", "CEvbusLinux"], swiftSettings: strict),
        .executableTarget(name: "evbus", dependencies: ["Evbus", "EvbusBroker", "EvbusIO", "EvbusWire", "EvbusController", "EvbusBridge", "EvbusNATS"], swiftSettings: strict),
        // The RabbitMQ RPC tutorial (fib) as a server and a client.
        .executableTarget(name: "evbus-fib", dependencies: ["Evbus", "EvbusController"], swiftSettings: strict),

        // Peers the end-to-end tests run as processes of their own (e.g. a responder killed mid-request).
        .executableTarget(name: "evbus-test-peer", dependencies: ["Evbus"], swiftSettings: strict),

        .testTarget(name: "EvbusWireTests", dependencies: ["EvbusWire"], swiftSettings: strict),
        .testTarget(name: "EvbusIOTests", dependencies: ["EvbusIO", "CEvbusLinux", "EvbusTestSupport"], swiftSettings: strict),
        .testTarget(name: "EvbusBrokerTests", dependencies: ["EvbusBroker", "EvbusWire", "EvbusTestSupport", "EvbusIO", "Evbus"], swiftSettings: strict),
        .testTarget(name: "EvbusNATSTests", dependencies: ["EvbusNATS", "EvbusController", "EvbusIO", "EvbusTestSupport"], swiftSettings: strict),
        .testTarget(name: "EvbusControllerTests", dependencies: ["EvbusController", "EvbusIO", "EvbusTestSupport"], swiftSettings: strict),
        .testTarget(name: "EvbusTests", dependencies: ["Evbus", "EvbusTestSupport", "EvbusWire", "EvbusIO", "EvbusController"], swiftSettings: strict),
        // Depends on the Evbus product's target alone: what compiles here compiles for an outside package.
        .testTarget(name: "EvbusPublicAPITests", dependencies: ["Evbus"], swiftSettings: strict),
        .testTarget(
            name: "EndToEndTests",
            dependencies: ["Evbus", "EvbusController", "EvbusTestSupport", "EvbusBroker", "evbus", "evbus-fib", "evbus-test-peer"],
            swiftSettings: strict
        ),
    ]
)
