internal import CVFIO
import Glibc
import SystemPackage

/// An opened VFIO device: container, group and device descriptors, and the migration
/// region found on it. Closes the descriptors when released; regions made from it
/// keep it alive.
public final class VFIODeviceHandle: Sendable {
    public let group: String
    public let deviceName: String
    public let containerFD: Int32
    public let groupFD: Int32
    public let deviceFD: Int32
    /// Regions the device reports (`num_regions`).
    public let regionCount: UInt32
    /// The region with capability type 3 / subtype 1.
    public let migrationRegionInfo: VFIORegionInfo
    /// The kernel the descriptors belong to; regions and dirty sources made here use it too.
    public let kernel: VFIOKernel

    init(group: String, deviceName: String, containerFD: Int32, groupFD: Int32, deviceFD: Int32,
         regionCount: UInt32, migrationRegionInfo: VFIORegionInfo, kernel: VFIOKernel) {
        self.group = group; self.deviceName = deviceName
        self.containerFD = containerFD; self.groupFD = groupFD; self.deviceFD = deviceFD
        self.regionCount = regionCount; self.migrationRegionInfo = migrationRegionInfo
        self.kernel = kernel
    }

    deinit {
        // Device before group before container: the reverse of opening (-1: the VMM's).
        for fd in [deviceFD, groupFD, containerFD] where fd >= 0 { try? kernel.close(fd) }
    }

    /// The migration region on the device fd, at the offset and size the kernel reported.
    public func region() throws(DeviceError) -> FileRegion {
        try FileRegion(fd: deviceFD, baseOffset: migrationRegionInfo.offset, size: migrationRegionInfo.size,
                       closeOnDeinit: false, owner: self, kernel: kernel)
    }

    public func migrationDevice(name: String? = nil) throws(DeviceError) -> MigrationDevice {
        MigrationDevice(name: name ?? deviceName, region: try region())
    }

    /// Dirty tracking through this container (Linux 5.8 form).
    public func iommuDirtyPageSource(iovaBase: UInt64 = 0) -> IOMMUDirtyPageSource {
        IOMMUDirtyPageSource(containerFD: containerFD, iovaBase: iovaBase, kernel: kernel)
    }
}

/// Finds the migration region of a device bound to vfio-pci:
/// /dev/vfio/vfio (container) + /dev/vfio/GROUP → GET_STATUS (viable?) →
/// SET_CONTAINER → SET_IOMMU(type1v2) → GET_DEVICE_FD(name) → GET_INFO →
/// GET_REGION_INFO for every region, walking the capability chain for type 3 / subtype 1.
public enum VFIODiscovery {
    public static func open(group: String, device: String,
                            containerPath: String = "/dev/vfio/vfio", groupDirectory: String = "/dev/vfio",
                            kernel: VFIOKernel = .live) throws(DeviceError) -> VFIODeviceHandle {
        let opened = try openDeviceFD(group: group, device: device, containerPath: containerPath,
                                      groupDirectory: groupDirectory, kernel: kernel)
        return try regionHandle(opened, group: group, device: device, kernel: kernel)
    }

    /// Which interface to use: `auto` probes v2 first (GET MIGRATION; ENOTTY = none), then
    /// the region; `v1`/`v2` force one (`--device NAME=vfio:G/D,interface=v1|v2`).
    public enum InterfaceChoice: String, Sendable, CaseIterable { case auto, v1, v2 }

    /// A device opened for migration, with the interface it speaks.
    public enum Opened: Sendable {
        case region(VFIODeviceHandle)
        case v2(VFIOV2Handle)
    }

    /// Opens the device like `open`, then finds how it migrates: `VFIO_DEVICE_FEATURE` GET
    /// MIGRATION first (what every driver of the last kernels speaks), the region
    /// (type 3 / subtype 1) after it, unless `interface` forces one.
    public static func openMigratable(group: String, device: String, interface: InterfaceChoice = .auto,
                                      containerPath: String = "/dev/vfio/vfio", groupDirectory: String = "/dev/vfio",
                                      kernel: VFIOKernel = .live) throws(DeviceError) -> Opened {
        let opened = try openDeviceFD(group: group, device: device, containerPath: containerPath,
                                      groupDirectory: groupDirectory, kernel: kernel)
        return try migratable(opened, group: group, device: device, interface: interface, kernel: kernel)
    }

    /// A device descriptor a VMM opened (`--device NAME=fd:N`, checked and duplicated by
    /// `InheritedVFIO.device`), owned from here on (closed on failure). The group and the
    /// container stay the VMM's: the handle's `groupFD` and `containerFD` are -1.
    public static func adopt(deviceFD: Int32, name: String, interface: InterfaceChoice = .auto,
                             kernel: VFIOKernel = .live) throws(DeviceError) -> Opened {
        let descriptors = Descriptors(kernel: kernel)
        descriptors.adopt(deviceFD)
        let opened = DeviceDescriptors(descriptors: descriptors, container: -1, groupFD: -1, deviceFD: deviceFD)
        return try migratable(opened, group: "", device: name, interface: interface, kernel: kernel)
    }

    /// v2 (GET MIGRATION) unless `interface` is v1, then the region.
    private static func migratable(_ opened: DeviceDescriptors, group: String, device: String, interface: InterfaceChoice,
                                   kernel: VFIOKernel) throws(DeviceError) -> Opened {
        if interface != .v1 {
            if let flags = try VFIOMigrationV2.probe(deviceFD: opened.deviceFD, kernel: kernel, name: device) {
                opened.descriptors.handOver()
                return .v2(VFIOV2Handle(group: group, deviceName: device, containerFD: opened.container, groupFD: opened.groupFD,
                                        deviceFD: opened.deviceFD, flags: flags, kernel: kernel))
            }
            if interface == .v2 {
                throw .wrongInterface(device: device, detail: "interface=v2 was asked for, but VFIO_DEVICE_FEATURE GET MIGRATION answers ENOTTY (no v2 migration driver, or a kernel before 5.18)")
            }
        }
        return .region(try regionHandle(opened, group: group, device: device, kernel: kernel))
    }

    /// What `openDeviceFD` opened; `descriptors` closes them all unless handed over.
    private struct DeviceDescriptors {
        let descriptors: Descriptors
        let container: Int32
        let groupFD: Int32
        let deviceFD: Int32
    }

    private static func openDeviceFD(group: String, device: String, containerPath: String, groupDirectory: String,
                                     kernel: VFIOKernel) throws(DeviceError) -> DeviceDescriptors {
        let descriptors = Descriptors(kernel: kernel)
        let container = try descriptors.open(containerPath, operation: "open VFIO container")

        let version = try? kernel.ioctl(container, UInt(CVFIO_GET_API_VERSION), .none)
        guard version == Int32(CVFIO_API_VERSION) else {
            let reported = version.map { "VFIO API \($0)" } ?? "no VFIO API (not a VFIO container)"
            throw .invalidArgument(operation: "VFIO_GET_API_VERSION", detail: "\(containerPath) reports \(reported), this tool speaks \(CVFIO_API_VERSION)")
        }

        let groupPath = groupDirectory + "/" + group
        let groupFD: Int32
        do throws(Errno) {
            groupFD = try descriptors.open(groupPath)
        } catch {
            throw .noSuchGroup(path: groupPath, errno: error)
        }

        // struct vfio_group_status { argsz, flags }
        var status: [UInt32] = [8, 0]
        try call(kernel, groupFD, CVFIO_GROUP_GET_STATUS, "VFIO_GROUP_GET_STATUS", path: groupPath, &status)
        guard status[1] & CVFIO_GROUP_FLAGS_VIABLE != 0 else { throw .groupNotViable(group: group) }

        var containerArg = [container]
        try call(kernel, groupFD, CVFIO_GROUP_SET_CONTAINER, "VFIO_GROUP_SET_CONTAINER", path: groupPath, &containerArg)
        guard let extension_ = try? kernel.ioctl(container, UInt(CVFIO_CHECK_EXTENSION), .integer(Int32(CVFIO_TYPE1v2_IOMMU))),
              extension_ > 0 else {
            throw .invalidArgument(operation: "VFIO_CHECK_EXTENSION", detail: "the container does not offer the type1v2 IOMMU")
        }
        _ = try DeviceError.systemCall("VFIO_SET_IOMMU(type1v2)", path: containerPath) { () throws(Errno) in
            try kernel.ioctl(container, UInt(CVFIO_SET_IOMMU), .integer(Int32(CVFIO_TYPE1v2_IOMMU)))
        }

        var name = Array(device.utf8CString)
        let deviceFD = try call(kernel, groupFD, CVFIO_GROUP_GET_DEVICE_FD, "VFIO_GROUP_GET_DEVICE_FD", path: device, &name)
        descriptors.adopt(deviceFD)
        return DeviceDescriptors(descriptors: descriptors, container: container, groupFD: groupFD, deviceFD: deviceFD)
    }

    private static func regionHandle(_ opened: DeviceDescriptors, group: String, device: String,
                                     kernel: VFIOKernel) throws(DeviceError) -> VFIODeviceHandle {
        let deviceFD = opened.deviceFD

        // struct vfio_device_info { argsz, flags, num_regions, num_irqs, cap_offset }
        var info: [UInt32] = [20, 0, 0, 0, 0]
        try call(kernel, deviceFD, CVFIO_DEVICE_GET_INFO, "VFIO_DEVICE_GET_INFO", path: device, &info)
        let regionCount = info[2]

        var found: VFIORegionInfo?
        for index in 0..<regionCount {
            let buffer: [UInt8]
            do throws(DeviceError) {
                buffer = try VFIORegionInfo.query(index: index) { (request) throws(DeviceError) in
                    try call(kernel, deviceFD, CVFIO_DEVICE_GET_REGION_INFO, "VFIO_DEVICE_GET_REGION_INFO(\(index))", path: device, &request)
                }
            } catch .systemCall(_, _, .invalidArgument) {
                continue  // vfio-pci refuses some fixed indexes (e.g. VGA) on devices without them
            }
            if try VFIORegionInfo.isMigrationRegion(buffer) {
                found = try VFIORegionInfo.parse(buffer)
                break
            }
        }
        guard let region = found else { throw .noMigrationRegion(device: device, regionsScanned: Int(regionCount)) }
        guard region.size >= MigrationInfo.size else {
            throw .protocolViolation(step: "migration region info", detail: "region \(region.index) is \(region.size) bytes, smaller than the 64-byte header")
        }
        opened.descriptors.handOver()
        return VFIODeviceHandle(group: group, deviceName: device, containerFD: opened.container, groupFD: opened.groupFD,
                                deviceFD: deviceFD, regionCount: regionCount, migrationRegionInfo: region, kernel: kernel)
    }

    /// One VFIO ioctl on a struct buffer; its result (a descriptor for GET_DEVICE_FD).
    @discardableResult
    private static func call<T>(_ kernel: VFIOKernel, _ fd: Int32, _ request: UInt, _ name: String, path: String,
                                _ arg: inout [T]) throws(DeviceError) -> Int32 {
        try DeviceError.systemCall(name, path: path) { () throws(Errno) in
            try arg.withMutableBytes { (buffer) throws(Errno) in try kernel.ioctl(fd, request, .buffer(buffer)) }
        }
    }
}

/// An opened VFIO device that speaks the v2 migration interface. Closes its
/// descriptors when released; the `VFIOMigrationV2` made from it keeps it alive.
public final class VFIOV2Handle: Sendable {
    public let group: String
    public let deviceName: String
    public let containerFD: Int32
    public let groupFD: Int32
    public let deviceFD: Int32
    /// What GET MIGRATION reported.
    public let flags: V2MigrationFlags
    public let kernel: VFIOKernel

    init(group: String, deviceName: String, containerFD: Int32, groupFD: Int32, deviceFD: Int32,
         flags: V2MigrationFlags, kernel: VFIOKernel) {
        self.group = group; self.deviceName = deviceName
        self.containerFD = containerFD; self.groupFD = groupFD; self.deviceFD = deviceFD
        self.flags = flags; self.kernel = kernel
    }

    deinit {
        for fd in [deviceFD, groupFD, containerFD] where fd >= 0 { try? kernel.close(fd) }
    }

    /// The engine's device. The state is read once: a device handed over by a VMM may
    /// not be RUNNING, and ERROR must be seen before the migration starts.
    public func migrationDevice(name: String? = nil, chunkBytes: Int = 1 << 20) throws(DeviceError) -> MigrationDevice {
        let v2 = VFIOMigrationV2(name: name ?? deviceName, deviceFD: deviceFD, flags: flags, kernel: kernel,
                                 chunkBytes: chunkBytes, owner: self)
        _ = try v2.currentState()
        return MigrationDevice(name: v2.name, v2: v2)
    }

    /// The container's dirty log (type1 only; reports every mapped page dirty for
    /// devices that cannot track, VFIO-V2.md §6).
    public func iommuDirtyPageSource(iovaBase: UInt64 = 0) -> IOMMUDirtyPageSource {
        IOMMUDirtyPageSource(containerFD: containerFD, iovaBase: iovaBase, kernel: kernel)
    }
}

/// The descriptors discovery opened so far: all closed on any failure, none once
/// handed over to a `VFIODeviceHandle`.
private final class Descriptors {
    private let kernel: VFIOKernel
    private var fds: [Int32] = []

    init(kernel: VFIOKernel) { self.kernel = kernel }

    deinit {
        for fd in fds.reversed() { try? kernel.close(fd) }
    }

    func open(_ path: String, operation: String) throws(DeviceError) -> Int32 {
        try DeviceError.systemCall(operation, path: path) { () throws(Errno) in try open(path) }
    }

    func open(_ path: String) throws(Errno) -> Int32 {
        let fd = try kernel.open(path, O_RDWR | O_CLOEXEC, 0)
        fds.append(fd)
        return fd
    }

    func adopt(_ fd: Int32) { fds.append(fd) }

    func handOver() { fds.removeAll() }
}
