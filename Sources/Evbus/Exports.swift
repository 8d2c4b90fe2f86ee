// What a library user needs comes with `import Evbus`: the wire types (StatEntry, ErrorCode,
// TopicRules) and the controller (Controller, Pending, Session, ControllerPool, Signal, ...).
@_exported public import EvbusWire
@_exported public import EvbusController
