import MigrationWire
import VFIODevice

/// A device on the source host: its region, where its dirty pages come from,
/// and the opaque compatibility string the destination must match.
public struct SourceDevice: @unchecked Sendable {
    public var name: String
    public var device: MigrationDevice
    public var dirtyPages: (any DirtyPageSource)?
    public var compatibility: String
    public init(device: MigrationDevice, dirtyPages: (any DirtyPageSource)?, compatibility: String) {
        self.name = device.name; self.device = device; self.dirtyPages = dirtyPages; self.compatibility = compatibility
    }
}

/// A device on the destination host, to be resumed.
public struct DestinationDevice: @unchecked Sendable {
    public var name: String
    public var device: MigrationDevice
    public var compatibility: String
    public init(device: MigrationDevice, compatibility: String) {
        self.name = device.name; self.device = device; self.compatibility = compatibility
    }
}

/// The HELLO check both ends make: a mismatch is named before anything moves.
enum HelloCheck {
    static func descriptors(names: [String], compat: [String], pageSize: Int) -> [DeviceDescriptor] {
        zip(names, compat).map { DeviceDescriptor(name: $0, pageSize: UInt32(pageSize), compatibility: $1) }
    }

    static func memoryRanges(_ memory: GuestMemory?) -> [MemoryRange] {
        guard let memory, memory.pageCount > 0 else { return [] }
        return [MemoryRange(startPFN: 0, pageCount: memory.pageCount, pageSize: UInt32(memory.pageSize))]
    }

    /// nil when compatible, else the reason in words.
    static func mismatch(source: Hello, destination: Hello) -> String? {
        if source.version != destination.version {
            return "protocol version \(source.version) on the source, \(destination.version) on the destination"
        }
        if source.devices.count != destination.devices.count {
            return "the source migrates \(source.devices.count) device(s) (\(source.devices.map(\.name).joined(separator: ", "))), the destination has \(destination.devices.count) (\(destination.devices.map(\.name).joined(separator: ", ")))"
        }
        for (s, d) in zip(source.devices, destination.devices) {
            if s.name != d.name { return "device name \(s.name) on the source, \(d.name) on the destination" }
            if s.pageSize != d.pageSize { return "device \(s.name): page size \(s.pageSize) on the source, \(d.pageSize) on the destination" }
            if s.compatibility != d.compatibility {
                return "device \(s.name): compatibility \"\(s.compatibility)\" on the source, \"\(d.compatibility)\" on the destination"
            }
        }
        if source.memory != destination.memory {
            func describe(_ r: [MemoryRange]) -> String {
                r.isEmpty ? "none" : r.map { "\($0.pageCount) pages of \($0.pageSize) bytes at PFN \($0.startPFN)" }.joined(separator: ", ")
            }
            return "guest memory: \(describe(source.memory)) on the source, \(describe(destination.memory)) on the destination"
        }
        if let e = source.encodings.first(where: { !destination.encodings.contains($0) }) {
            return "the source wants encoding \(e), which the destination does not accept"
        }
        return nil
    }
}
