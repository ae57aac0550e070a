import MigrationWire
import VFIODevice

/// A device on the source host: its region, where its dirty pages come from,
/// and the opaque compatibility string the destination must match.
public struct SourceDevice: @unchecked Sendable {
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
public struct DestinationDevice: @unchecked Sendable {
    public var name: String
    public var device: MigrationDevice
    public var compatibility: String
    /// As for `SourceDevice`: the interface prefix is part of what HELLO compares.
    public init(device: MigrationDevice, compatibility: String) {
        self.name = device.name; self.device = device
        self.compatibility = device.interface.helloPrefix + compatibility
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

    /// nil when compatible, else the reason in words. The checks of docs/PROTOCOL.md §5.1,
    /// made by both ends: a failed one is answered with ABORT `incompatible`.
    static func mismatch(source: Hello, destination: Hello) -> String? {
        if source.version != destination.version {
            return "protocol version \(source.version) on the source, \(destination.version) on the destination"
        }
        if source.sessionID != destination.sessionID {
            return "the source's HELLO carries another session id than the destination chose"
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
        if let outside = source.memory.first(where: { !lies($0, inside: destination.memory) }) {
            return "guest memory: \(describe([outside])) on the source is not inside the destination's \(describe(destination.memory))"
        }
        // raw is always permitted, listed or not (§5.1).
        if let e = source.encodings.first(where: { $0 != .raw && !destination.encodings.contains($0) }) {
            return "the source wants encoding \(e), which the destination does not accept"
        }
        return nil
    }

    /// Whether `range` is covered by `ranges` of the same page size (adjacent ones may
    /// cover it together): the source may send less memory than the destination has.
    static func lies(_ range: MemoryRange, inside ranges: [MemoryRange]) -> Bool {
        var pfn = range.startPFN
        let end = range.startPFN + range.pageCount
        while pfn < end {
            guard let cover = ranges.first(where: { $0.pageSize == range.pageSize && pfn >= $0.startPFN && pfn - $0.startPFN < $0.pageCount }) else {
                return false
            }
            pfn = cover.startPFN + cover.pageCount
        }
        return true
    }

    private static func describe(_ r: [MemoryRange]) -> String {
        r.isEmpty ? "none" : r.map { "\($0.pageCount) pages of \($0.pageSize) bytes at PFN \($0.startPFN)" }.joined(separator: ", ")
    }
}
