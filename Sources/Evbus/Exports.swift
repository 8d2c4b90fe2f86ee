// What a library user needs comes with `import Evbus`: the wire types (StatEntry, ErrorCode,
// TopicRules), the controller (Controller, Pending, Session, ControllerPool, Signal, sockets on
// its loop, ...), and from EvbusIO only the event loop a peer or controller can be given, its
// errors and its task executor (the rest of EvbusIO is the library's own plumbing).
@_exported public import EvbusWire
@_exported public import EvbusController
@_exported public import class EvbusIO.EventLoop
@_exported public import class EvbusIO.LoopTaskExecutor
@_exported public import struct EvbusIO.IOError
@_exported public import enum EvbusIO.EventLoopError
