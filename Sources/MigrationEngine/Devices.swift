import VFIODevice

/// A device on the source host: its region, where its dirty pages come from,
/// and the opaque compatibility string the destination must match.
public struct SourceDevice: @unchecked Sendable {  // DirtyPageSource is not declared Sendable in VFIODevice; only the session's thread calls it
    public var name: String
    public var device: MigrationDevice
    public var dirtyPages: (any DirtyPageSource)?
    public var compatibility: String
    public init(device: MigrationDevice, dirtyPages: (any DirtyPageSource)?, compatibility: String) {
        self.name = device.name; self.device = device; self.dirtyPages = dirtyPages; self.compatibility = compatibility
    }
}

/// A device on the destination host, to be resumed.
public struct DestinationDevice: Sendable {
    public var name: String
    public var device: MigrationDevice
    public var compatibility: String
    public init(device: MigrationDevice, compatibility: String) {
        self.name = device.name; self.device = device; self.compatibility = compatibility
    }
}
