/// `device_state` bits (seed header). Bits 3–31 are reserved and preserved.
public struct DeviceState: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let running = DeviceState(rawValue: 1 << 0)
    public static let saving = DeviceState(rawValue: 1 << 1)
    public static let resuming = DeviceState(rawValue: 1 << 2)
    public static let stopped: DeviceState = []
    public static let mask: UInt32 = 0x7
    /// `SAVING|RESUMING` is invalid and is never written.
    public var isValid: Bool { !(contains(.saving) && contains(.resuming)) }

    /// The three defined bits only (reserved bits 3–31 dropped).
    public var defined: DeviceState { DeviceState(rawValue: rawValue & DeviceState.mask) }
    /// Reserved bits 3–31 as they appear in the field.
    public var reservedBits: UInt32 { rawValue & ~DeviceState.mask }

    /// "SAVING|RUNNING", "STOPPED", "SAVING|RESUMING"; reserved bits, if any, in hex.
    public var description: String {
        var names: [String] = []
        if contains(.saving) { names.append("SAVING") }
        if contains(.resuming) { names.append("RESUMING") }
        if contains(.running) { names.append("RUNNING") }
        if names.isEmpty { names.append("STOPPED") }
        if reservedBits != 0 { names.append("reserved=0x" + String(reservedBits, radix: 16)) }
        return names.joined(separator: "|")
    }
}
