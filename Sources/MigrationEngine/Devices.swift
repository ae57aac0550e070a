import VFIODevice

/// A device on the source host: its region, where its dirty pages come from,
/// and the opaque compatibility string the destination must match.
public struct SourceDevice: @unchecked Sendable {  // DirtyPageSource is not declared Sendable in VFIODevice; only the session's thread calls it
    public var name: String
    public var device: MigrationDevice
    public var dirtyPages: (any DirtyPageSource)?
    public var compatibility: String
    /// `compatibility` goes into HELLO behind the device's interface (v2 and its flags;
    /// nothing for the region protocol), so the ends agree on it before anything moves.
    public init(device: MigrationDevice, dirtyPages: (any DirtyPageSource)?, compatibility: String) {
        self.name = device.name; self.device = device; self.dirtyPages = dirtyPages
        self.compatibility = device.interface.helloPrefix + compatibility
    }
}

/// A device on the destination host, to be resumed.
public struct DestinationDevice: Sendable {
    public var name: String
    public var device: MigrationDevice
    public var compatibility: String
    /// As for `SourceDevice`: the interface prefix is part of what HELLO compares.
    public init(device: MigrationDevice, compatibility: String) {
        self.name = device.name; self.device = device
        self.compatibility = device.interface.helloPrefix + compatibility
    }
}
