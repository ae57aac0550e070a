import CVFIO
import Glibc

/// An opened VFIO device: container, group and device descriptors, and the migration
/// region found on it. Closes the descriptors when released; regions made from it
/// keep it alive.
public final class VFIODeviceHandle: @unchecked Sendable {
    public let group: String
    public let deviceName: String
    public let containerFD: Int32
    public let groupFD: Int32
    public let deviceFD: Int32
    /// Regions the device reports (`num_regions`).
    public let regionCount: UInt32
    /// The region with capability type 3 / subtype 1.
    public let migrationRegionInfo: VFIORegionInfo

    init(group: String, deviceName: String, containerFD: Int32, groupFD: Int32, deviceFD: Int32,
         regionCount: UInt32, migrationRegionInfo: VFIORegionInfo) {
        self.group = group; self.deviceName = deviceName
        self.containerFD = containerFD; self.groupFD = groupFD; self.deviceFD = deviceFD
        self.regionCount = regionCount; self.migrationRegionInfo = migrationRegionInfo
    }

    deinit {
        Glibc.close(deviceFD)
        Glibc.close(groupFD)
        Glibc.close(containerFD)
    }

    /// The migration region on the device fd, at the offset and size the kernel reported.
    public func region() throws -> FileRegion {
        try FileRegion(fd: deviceFD, baseOffset: migrationRegionInfo.offset, size: migrationRegionInfo.size,
                       closeOnDeinit: false, owner: self)
    }

    public func migrationDevice(name: String? = nil) throws -> MigrationDevice {
        MigrationDevice(name: name ?? deviceName, region: try region())
    }

    /// Dirty tracking through this container (Linux 5.8 form).
    public func iommuDirtyPageSource(iovaBase: UInt64 = 0) -> IOMMUDirtyPageSource {
        IOMMUDirtyPageSource(containerFD: containerFD, iovaBase: iovaBase)
    }
}

/// Finds the migration region of a device bound to vfio-pci:
/// /dev/vfio/vfio (container) + /dev/vfio/GROUP → GET_STATUS (viable?) →
/// SET_CONTAINER → SET_IOMMU(type1v2) → GET_DEVICE_FD(name) → GET_INFO →
/// GET_REGION_INFO for every region, walking the capability chain for type 3 / subtype 1.
public enum VFIODiscovery {
    public static func open(group: String, device: String,
                            containerPath: String = "/dev/vfio/vfio", groupDirectory: String = "/dev/vfio") throws -> VFIODeviceHandle {
        let container = Glibc.open(containerPath, O_RDWR | O_CLOEXEC)
        guard container >= 0 else { throw systemError("open VFIO container", path: containerPath) }
        var fds = [container]
        var handed = false
        defer { if !handed { fds.forEach { _ = Glibc.close($0) } } }

        let version = ioctl(container, UInt(CVFIO_GET_API_VERSION))
        guard version == Int32(CVFIO_API_VERSION) else {
            throw DeviceError.invalidArgument(operation: "VFIO_GET_API_VERSION", detail: "kernel reports VFIO API \(version), this tool speaks \(CVFIO_API_VERSION)")
        }

        let groupPath = groupDirectory + "/" + group
        let groupFD = Glibc.open(groupPath, O_RDWR | O_CLOEXEC)
        guard groupFD >= 0 else { throw DeviceError.noSuchGroup(path: groupPath, errno: errno) }
        fds.append(groupFD)

        // struct vfio_group_status { argsz, flags }
        var status: [UInt32] = [8, 0]
        try call(groupFD, CVFIO_GROUP_GET_STATUS, "VFIO_GROUP_GET_STATUS", path: groupPath, &status)
        guard status[1] & CVFIO_GROUP_FLAGS_VIABLE != 0 else { throw DeviceError.groupNotViable(group: group) }

        var containerArg: Int32 = container
        try withUnsafeMutablePointer(to: &containerArg) { p in
            try check(ioctl(groupFD, UInt(CVFIO_GROUP_SET_CONTAINER), p), "VFIO_GROUP_SET_CONTAINER", path: groupPath)
        }
        guard ioctl(container, UInt(CVFIO_CHECK_EXTENSION), CInt(CVFIO_TYPE1v2_IOMMU)) > 0 else {
            throw DeviceError.invalidArgument(operation: "VFIO_CHECK_EXTENSION", detail: "the container does not offer the type1v2 IOMMU")
        }
        try check(ioctl(container, UInt(CVFIO_SET_IOMMU), CInt(CVFIO_TYPE1v2_IOMMU)), "VFIO_SET_IOMMU(type1v2)", path: containerPath)

        let deviceFD = device.withCString { ioctl(groupFD, UInt(CVFIO_GROUP_GET_DEVICE_FD), UnsafeMutableRawPointer(mutating: $0)) }
        guard deviceFD >= 0 else { throw systemError("VFIO_GROUP_GET_DEVICE_FD", path: device) }
        fds.append(deviceFD)

        // struct vfio_device_info { argsz, flags, num_regions, num_irqs, cap_offset }
        var info: [UInt32] = [20, 0, 0, 0, 0]
        try call(deviceFD, CVFIO_DEVICE_GET_INFO, "VFIO_DEVICE_GET_INFO", path: device, &info)
        let regionCount = info[2]

        var found: VFIORegionInfo?
        for index in 0..<regionCount {
            let buffer: [UInt8]
            do {
                buffer = try VFIORegionInfo.query(index: index) { request in
                    try call(deviceFD, CVFIO_DEVICE_GET_REGION_INFO, "VFIO_DEVICE_GET_REGION_INFO(\(index))", path: device, &request)
                }
            } catch DeviceError.systemCall(_, _, EINVAL) {
                continue  // vfio-pci refuses some fixed indexes (e.g. VGA) on devices without them
            }
            if try VFIORegionInfo.isMigrationRegion(buffer) {
                found = try VFIORegionInfo.parse(buffer)
                break
            }
        }
        guard let region = found else { throw DeviceError.noMigrationRegion(device: device, regionsScanned: Int(regionCount)) }
        guard region.size >= MigrationInfo.size else {
            throw DeviceError.protocolViolation(step: "migration region info", detail: "region \(region.index) is \(region.size) bytes, smaller than the 64-byte header")
        }
        handed = true
        return VFIODeviceHandle(group: group, deviceName: device, containerFD: container, groupFD: groupFD,
                                deviceFD: deviceFD, regionCount: regionCount, migrationRegionInfo: region)
    }

    private static func call<T>(_ fd: Int32, _ request: UInt, _ name: String, path: String, _ arg: inout [T]) throws {
        let rc = arg.withUnsafeMutableBytes { ioctl(fd, request, $0.baseAddress!) }
        try check(rc, name, path: path)
    }

    private static func check(_ rc: Int32, _ name: String, path: String) throws {
        guard rc >= 0 else { throw systemError(name, path: path) }
    }
}
