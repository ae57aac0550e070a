/// Access to one migration region: header fields at native width and alignment
/// only, and byte ranges inside the data section.
public protocol MigrationRegion: AnyObject, Sendable {
    var regionSize: UInt64 { get }
    func read32(at offset: UInt64) throws(DeviceError) -> UInt32
    func write32(_ value: UInt32, at offset: UInt64) throws(DeviceError)
    func read64(at offset: UInt64) throws(DeviceError) -> UInt64
    func write64(_ value: UInt64, at offset: UInt64) throws(DeviceError)
    func readBytes(count: Int, at offset: UInt64) throws(DeviceError) -> [UInt8]
    func writeBytes(_ bytes: [UInt8], at offset: UInt64) throws(DeviceError)
}

extension MigrationRegion {
    /// Reads a u64 header field (`read64` at the field's offset).
    func read(_ field: MigrationInfo.Field) throws(DeviceError) -> UInt64 {
        precondition(field.width == 8, "\(field.name) is not a u64 field")
        return try read64(at: field.offset)
    }

    /// Writes a u64 header field (`write64` at the field's offset).
    func write(_ value: UInt64, to field: MigrationInfo.Field) throws(DeviceError) {
        precondition(field.width == 8, "\(field.name) is not a u64 field")
        try write64(value, at: field.offset)
    }
}

/// Which kernel interface a device speaks, as both ends announce it in HELLO.
public enum DeviceInterface: Sendable, Equatable, CustomStringConvertible {
    /// The seed's migration region (type 3 / subtype 1).
    case region
    /// Linux 5.18+ FSM + data_fd, with the flags GET MIGRATION reported.
    case v2(V2MigrationFlags)

    public var description: String {
        switch self {
        case .region: return "v1 (migration region)"
        case .v2(let flags): return "v2 (\(flags))"
        }
    }

    /// What the engine puts in front of a device's compatibility string in HELLO, so a
    /// v1 device never meets a v2 one, nor v2 devices with different flags. Empty for
    /// the region protocol: its HELLO stays byte for byte what it was (PROTOCOL.md §5.1).
    public var helloPrefix: String {
        switch self {
        case .region: return ""
        case .v2(let flags): return "vfio-v2[\(flags)];"
        }
    }
}

/// A named device: the engine's one device abstraction. It speaks either the region
/// protocol (v1, `region`) or the v2 interface (`v2`); the engine's calls are the same
/// (start saving = SAVING|RUNNING, stop-and-copy = SAVING, ... — see docs/DEVICE.md for
/// how each becomes a v2 arc), and `SaveSequence`/`ResumeSequence` move its data.
public final class MigrationDevice: @unchecked Sendable {  // holds a VFIOMigrationV2 (descriptors, one thread at a time)
    public let name: String
    /// The migration region (v1). A v2 device has none: every access throws `wrongInterface`.
    public let region: any MigrationRegion
    /// The v2 interface; nil for a region device.
    public let v2: VFIOMigrationV2?
    public init(name: String, region: any MigrationRegion) { self.name = name; self.region = region; self.v2 = nil }

    public init(name: String, v2: VFIOMigrationV2) {
        self.name = name; self.v2 = v2
        self.region = NoMigrationRegion(device: name)
    }

    public var interface: DeviceInterface { v2.map { .v2($0.flags) } ?? .region }

    /// The whole device_state field, reserved bits included. For v2 the nearest region
    /// state of the v2 state (ERROR reads as SAVING|RESUMING, v1's error encoding).
    public func readRawState() throws(DeviceError) -> UInt32 {
        if let v2 { return try v2.currentStateAsRegion().rawValue }
        return try region.read32(at: MigrationInfo.Field.deviceState.offset)
    }

    /// The three defined bits of device_state.
    public func readState() throws(DeviceError) -> DeviceState {
        DeviceState(rawValue: try readRawState()).defined
    }

    /// Keeps reserved bits 3–31; refuses `SAVING|RESUMING` without touching the device.
    public func setState(_ state: DeviceState) throws(DeviceError) {
        if let v2 { return try v2.perform(state) }
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

    public func pendingBytes() throws(DeviceError) -> UInt64 {
        if let v2 { return try v2.pendingBytes() }
        return try region.read(.pendingBytes)
    }

    /// Before any device is stopped at switch-over: v2 devices that offer P2P go to
    /// PRE_COPY_P2P / RUNNING_P2P first (all of them, then STOP_COPY). Nothing for v1.
    public func quiesceP2P() throws(DeviceError) {
        try v2?.quiesceP2P()
    }

    /// Destination, after the last data and before READY: v2 leaves RESUMING for STOP,
    /// where the driver validates the stream (a refusal fails the session before
    /// COMMIT). Nothing for the region protocol: see docs/DEVICE.md for why it keeps
    /// RESUMING until COMMIT.
    public func finishResuming() throws(DeviceError) {
        try v2?.finishResuming()
    }
}

extension VFIOMigrationV2 {
    /// The engine's state vocabulary (the region protocol's bits, read as intents)
    /// carried out as v2 steps. The table is in docs/DEVICE.md.
    func perform(_ intent: DeviceState) throws(DeviceError) {
        switch intent {
        case [.saving, .running]: try startSaving()
        case .saving: try stopAndCopy()
        case .running: try run()
        case .resuming: try startResuming()
        case .stopped: try stop()
        default:
            throw .invalidStateValue(intent.rawValue, reason: "no v2 step corresponds to \(intent)")
        }
    }

    func currentStateAsRegion() throws(DeviceError) -> DeviceState {
        _ = try currentState()
        return regionEquivalent
    }
}

/// The `region` of a v2 device: there is none, and saying so beats a crash or a
/// silent region read when something v1-only (a region dirty query) is wired to it.
final class NoMigrationRegion: MigrationRegion {
    let device: String
    init(device: String) { self.device = device }
    var regionSize: UInt64 { 0 }
    private func refuse() -> DeviceError {
        .wrongInterface(device: device, detail: "the device speaks the v2 interface and has no migration region (use --dirty device-log or iommu, not region)")
    }
    func read32(at offset: UInt64) throws(DeviceError) -> UInt32 { throw refuse() }
    func write32(_ value: UInt32, at offset: UInt64) throws(DeviceError) { throw refuse() }
    func read64(at offset: UInt64) throws(DeviceError) -> UInt64 { throw refuse() }
    func write64(_ value: UInt64, at offset: UInt64) throws(DeviceError) { throw refuse() }
    func readBytes(count: Int, at offset: UInt64) throws(DeviceError) -> [UInt8] { throw refuse() }
    func writeBytes(_ bytes: [UInt8], at offset: UInt64) throws(DeviceError) { throw refuse() }
}
