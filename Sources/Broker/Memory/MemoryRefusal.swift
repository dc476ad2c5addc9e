import BrokerProtocol

/// Why the broker refused a memory socket request: a stable ``Pagebroker_V1_MemoryCode`` (the
/// wire's, never renumbered) and a message for the attaching process's logs.
public struct MemoryRefusal: Error, Hashable, Sendable, CustomStringConvertible {
    public let code: Pagebroker_V1_MemoryCode
    public let message: String

    public init(_ code: Pagebroker_V1_MemoryCode, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(self.code.stableName): \(self.message)" }
}
