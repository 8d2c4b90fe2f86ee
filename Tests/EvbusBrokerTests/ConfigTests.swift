import EvbusBroker
import EvbusWire
import Foundation
import Testing

@Suite struct ConfigTests {
    static let configsDirectory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Configs")

    @Test func everyFileInConfigsLoads() throws {
        // Every broker config; bridge.json is the bridge's (BridgeTests loads it).
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.configsDirectory.path)
            .filter { $0.hasSuffix(".json") && $0 != "bridge.json" }
        #expect(files.contains("broker.json"))
        for file in files {
            _ = try BrokerConfig.load(file: Self.configsDirectory.appendingPathComponent(file).path)
        }
    }

    @Test func brokerJSONShowsExactlyTheDefaults() throws {
        var loaded = try BrokerConfig.load(file: Self.configsDirectory.appendingPathComponent("broker.json").path)
        loaded.socketPath = nil  // broker.json spells out the usual resolution as null
        #expect(loaded == BrokerConfig())
    }

    @Test func theDurableExampleSaysWhatItMeans() throws {
        let c = try BrokerConfig.load(file: Self.configsDirectory.appendingPathComponent("durable-interval.json").path)
        #expect(c.dataDir == "/var/lib/evbus")
        #expect(c.sync == .interval(milliseconds: 50))
        #expect(c.exchanges.first?.durable == true && c.queues.first?.options.durable == true)
        let work = try BrokerConfig.load(file: Self.configsDirectory.appendingPathComponent("work-queues.json").path)
        #expect(work.queues.first { $0.name == "task_queue" }?.options.durable == true)
        #expect(try BrokerConfig.decode(Data(#"{"sync": "interval"}"#.utf8)).sync == .interval(milliseconds: 100))
    }

    @Test func anEmptyObjectMeansAllDefaults() throws {
        #expect(try BrokerConfig.decode(Data("{}".utf8)) == BrokerConfig())
    }

    @Test(arguments: [
        (#"{"maxFrameBytes": "big"}"#, "maxFrameBytes", "expected a whole number"),
        (#"{"slowConsumerPolicy": "yolo"}"#, "slowConsumerPolicy", #"expected one of "backpressure", "drop", "disconnect""#),
        (#"{"highWaterMark": 5}"#, "highWaterMark", "unknown setting"),
        (#"{"lowWatermarkBytes": 9000000}"#, "lowWatermarkBytes", "must be below highWatermarkBytes"),
        (#"{"maxFrameBytes": 10}"#, "maxFrameBytes", "between 1024 and 67108864"),
        (#"{"socketMode": "0999"}"#, "socketMode", "octal file mode"),
        (#"{"logLevel": "loud"}"#, "logLevel", "expected one of"),
        (#"{"maxFrameBytes": 1024,"#, "", "not valid JSON"),
        (#"{"exchanges": [{"name": "x", "type": "headers"}]}"#, "exchanges[0].type", "expected \"fanout\", \"direct\" or \"topic\""),
        (#"{"exchanges": [{"name": "x", "type": "fanout", "internal": true}]}"#, "exchanges[0].internal", "unknown key"),
        (#"{"sync": "sometimes"}"#, "sync", "expected \"always\" or \"interval\""),
        (#"{"syncIntervalMillis": 10}"#, "syncIntervalMillis", "applies only with"),
        (#"{"sync": "interval", "syncIntervalMillis": 0}"#, "syncIntervalMillis", "between 1 and 60000"),
        (#"{"segmentBytes": 100}"#, "segmentBytes", "between 4096"),
        (#"{"durableQueueMemoryBytes": 1000}"#, "durableQueueMemoryBytes", "between 4096 and 1073741824"),
        (#"{"durableQueueMemoryBytes": "lots"}"#, "durableQueueMemoryBytes", "expected a whole number"),
        (#"{"dataDir": ""}"#, "dataDir", "must not be empty"),
        (#"{"queues": [{"name": "q", "durable": "yes"}]}"#, "queues[0].durable", "expected"),
        (#"{"queues": [{"name": "q", "overflow": "sometimes"}]}"#, "queues[0].overflow", "drop-head"),
        (#"{"queues": [{"name": "q", "maxLength": -1}]}"#, "queues[0].maxLength", "expected"),
        (#"{"queues": [{"name": "q", "deadLetterExchange": "dlx"}]}"#, "queues[0]", "dead-letter exchange \"dlx\" does not exist"),
        (#"{"queues": [{"name": "amq.q"}]}"#, "queues[0]", "reserved"),
        (#"{"queues": [{"name": ""}]}"#, "queues[0].name", "needs a name"),
        (#"{"bindings": [{"queue": "q", "exchange": "amq.topic", "key": "a"}]}"#, "bindings[0]", "no queue named \"q\""),
        (#"{"queues": [{"name": "q"}], "bindings": [{"queue": "q", "exchange": "amq.topic", "key": "a..b"}]}"#, "bindings[0]", "invalid pattern"),
    ])
    func badSettingsAreRefusedWithTheKeyPath(_ json: String, _ key: String, _ reason: String) {
        do {
            _ = try BrokerConfig.decode(Data(json.utf8), file: "test.json")
            Issue.record("accepted \(json)")
        } catch {
            #expect(error.keyPath == key, "\(error)")
            #expect(error.description.contains(reason), "\(error)")
            #expect(error.description.hasPrefix("config test.json"))
        }
    }

    @Test func aDurableQueuesMemoryBudgetIsCappedAtTheHighWatermark() throws {
        // Past the watermark, backpressure would pause publishers before a queue could page.
        let c = try BrokerConfig.decode(Data(#"{"durableQueueMemoryBytes": 67108864}"#.utf8), file: "test.json")
        #expect(c.durableQueueMemoryBytes == 64 << 20)
        #expect(CoreSettings(c).durableQueueMemoryBytes == c.highWatermarkBytes)
        #expect(CoreSettings(BrokerConfig()).durableQueueMemoryBytes == 2 << 20)
    }

    @Test func aMissingFileIsRefusedNamingIt() {
        #expect(throws: ConfigError.self) { try BrokerConfig.load(file: "/nonexistent/evbus.json") }
    }
}
