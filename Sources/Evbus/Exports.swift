// The wire types a library user meets (StatEntry, ErrorCode, TopicRules) come with `import Evbus`.
@_exported public import EvbusWire
