/// Access to one migration region: header fields at native width and alignment
/// only, and byte ranges inside the data section.
public protocol MigrationRegion: AnyObject, Sendable {
    var regionSize: UInt64 { get }
    func read32(at offset: UInt64) throws -> UInt32
    func write32(_ value: UInt32, at offset: UInt64) throws
    func read64(at offset: UInt64) throws -> UInt64
    func write64(_ value: UInt64, at offset: UInt64) throws
    func readBytes(count: Int, at offset: UInt64) throws -> [UInt8]
    func writeBytes(_ bytes: [UInt8], at offset: UInt64) throws
}

extension MigrationRegion {
    /// Reads a u64 header field (`read64` at the field's offset).
    func read(_ field: MigrationInfo.Field) throws -> UInt64 {
        precondition(field.width == 8, "\(field.name) is not a u64 field")
        return try read64(at: field.offset)
    }

    /// Writes a u64 header field (`write64` at the field's offset).
    func write(_ value: UInt64, to field: MigrationInfo.Field) throws {
        precondition(field.width == 8, "\(field.name) is not a u64 field")
        try write64(value, at: field.offset)
    }
}

/// A named device and its region; state changes by read-modify-write.
public final class MigrationDevice: Sendable {
    public let name: String
    public let region: any MigrationRegion
    public init(name: String, region: any MigrationRegion) { self.name = name; self.region = region }

    /// The whole device_state field, reserved bits included.
    public func readRawState() throws -> UInt32 {
        try region.read32(at: MigrationInfo.Field.deviceState.offset)
    }

    /// The three defined bits of device_state.
    public func readState() throws -> DeviceState {
        DeviceState(rawValue: try readRawState()).defined
    }

    /// Keeps reserved bits 3–31; refuses `SAVING|RESUMING` without touching the device.
    public func setState(_ state: DeviceState) throws {
        // Validate before any access: an invalid value must never reach the driver,
        // and a caller's stray reserved bits must not overwrite the device's.
        guard state.isValid else {
            throw DeviceError.invalidStateValue(state.rawValue, reason: "SAVING and RESUMING together is the invalid state")
        }
        guard state.reservedBits == 0 else {
            throw DeviceError.invalidStateValue(state.rawValue, reason: "bits 3–31 are reserved; the caller must not set them")
        }
        let current = try readRawState()
        let next = (current & ~DeviceState.mask) | state.rawValue
        try region.write32(next, at: MigrationInfo.Field.deviceState.offset)
    }

    public func pendingBytes() throws -> UInt64 {
        try region.read(.pendingBytes)
    }
}
