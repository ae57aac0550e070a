import CVFIO
import Glibc
import SystemErrno
import SystemPackage
import Testing
@testable import VFIODevice

/// The code that only real VFIO hardware reaches — discovery, the region on the
/// device fd, guest-memory mapping — run against a fake kernel.
@Suite struct KernelSeamTests {
    static let regionOffset: UInt64 = 0x1000

    /// A BAR without capabilities, an index vfio-pci refuses, the migration region.
    static func regions(migration: Bool = true, migrationSize: UInt64 = 0x2000) -> [[UInt8]?] {
        let bar = RegionInfoBuilder(index: 0, flags: VFIORegionInfo.flagRead, size: 0x100, offset: 0).bytes
        var b = RegionInfoBuilder(index: 2, flags: VFIORegionInfo.flagRead | VFIORegionInfo.flagWrite | VFIORegionInfo.flagCaps,
                                  size: migrationSize, offset: regionOffset)
        let sparse = b.cap(id: 1, body: [1, 0, 0x1000, 0, 0x1000, 0])
        let type = b.cap(id: 2, body: migration ? [3, 1] : [3, 2])
        b.chain([sparse, type])
        return [bar, nil, b.bytes]
    }

    static func setup(_ change: (inout FakeVFIOKernel.Setup) -> Void = { _ in }) -> FakeVFIOKernel.Setup {
        var s = FakeVFIOKernel.Setup()
        s.regions = regions()
        s.files[s.deviceName] = [UInt8](repeating: 0, count: Int(regionOffset) + 0x2000)
        change(&s)
        return s
    }

    func discover(_ fake: FakeVFIOKernel) throws(DeviceError) -> VFIODeviceHandle {
        try VFIODiscovery.open(group: "42", device: "0000:01:00.0", kernel: fake.kernel)
    }

    @Test func discoveryWalksTheKernelSequenceAndReleasesEveryDescriptor() throws {
        let fake = FakeVFIOKernel(Self.setup())
        var handle: VFIODeviceHandle? = try discover(fake)
        #expect(handle?.migrationRegionInfo.index == 2 && handle?.migrationRegionInfo.offset == Self.regionOffset)
        #expect(handle?.regionCount == 3 && fake.openDescriptors.count == 3)
        #expect(fake.calls.filter { !$0.hasPrefix("close") } == [
            "open /dev/vfio/vfio", "VFIO_GET_API_VERSION", "open /dev/vfio/42", "VFIO_GROUP_GET_STATUS",
            "VFIO_GROUP_SET_CONTAINER", "VFIO_CHECK_EXTENSION", "VFIO_SET_IOMMU", "VFIO_GROUP_GET_DEVICE_FD",
            "VFIO_DEVICE_GET_INFO", "VFIO_DEVICE_GET_REGION_INFO", "VFIO_DEVICE_GET_REGION_INFO",
            "VFIO_DEVICE_GET_REGION_INFO", "VFIO_DEVICE_GET_REGION_INFO",
        ])
        // The region reads the device fd at the offset the kernel reported.
        var region: FileRegion? = try handle?.region()
        try region?.write32(DeviceState.running.rawValue, at: 0)
        #expect(fake.file("0000:01:00.0")?[Int(Self.regionOffset)] == UInt8(DeviceState.running.rawValue))
        handle = nil
        #expect(fake.openDescriptors.count == 3, "the region keeps the handle alive")
        region = nil
        #expect(fake.openDescriptors.isEmpty)
    }

    /// `--device NAME=fd:N`: the VMM opened container, group and device; we adopt the
    /// device descriptor alone, find its region as for a path, and close only it.
    @Test func anAdoptedDeviceDescriptorFindsItsRegionAndClosesOnlyItself() throws {
        let fake = FakeVFIOKernel(Self.setup())
        let vmm = try discover(fake)
        let before = fake.calls.count
        var adopted: VFIODeviceHandle?
        if case .region(let h) = try VFIODiscovery.adopt(deviceFD: vmm.deviceFD, name: "gpu0", interface: .v1, kernel: fake.kernel) { adopted = h }
        #expect(adopted?.migrationRegionInfo.index == 2 && adopted?.groupFD == -1 && adopted?.containerFD == -1)
        #expect(!fake.calls[before...].contains { $0.hasPrefix("open") || $0.hasPrefix("VFIO_GROUP") }, "\(fake.calls[before...])")
        adopted = nil
        #expect(fake.openDescriptors.values.sorted { "\($0)" < "\($1)" } == [.container, .group], "only the device was closed")
        withExtendedLifetime(vmm) {}
    }

    @Test func regionInfoIsAskedAgainWithTheArgszTheKernelWants() throws {
        let fake = FakeVFIOKernel(Self.setup())
        let handle = try discover(fake)
        let full = try #require(Self.regions()[2])
        #expect(handle.migrationRegionInfo.argsz == UInt32(full.count) && handle.migrationRegionInfo.capOffset == 32)
        #expect(fake.calls.filter { $0 == "VFIO_DEVICE_GET_REGION_INFO" }.count == 4, "index 2 twice: 32 bytes, then the chain's size")
    }

    @Test func aKernelOfAnotherAPIVersionIsRefusedBeforeTheGroupIsOpened() {
        let fake = FakeVFIOKernel(Self.setup { $0.apiVersion = 1 })
        let error = thrownError { try discover(fake) }
        #expect(error?.kind == "invalidArgument")
        #expect(error?.description.contains("reports VFIO API 1") == true)
        #expect(!fake.calls.contains("open /dev/vfio/42"))
        #expect(fake.openDescriptors.isEmpty)
    }

    @Test func aNonViableGroupIsRefusedBeforeItJoinsTheContainer() {
        let fake = FakeVFIOKernel(Self.setup { $0.viable = false })
        #expect(thrownError { try discover(fake) } == .groupNotViable(group: "42"))
        #expect(!fake.calls.contains("VFIO_GROUP_SET_CONTAINER"))
        #expect(fake.openDescriptors.isEmpty)
    }

    @Test func aDeviceWithoutTheMigrationCapabilityIsRefused() {
        let fake = FakeVFIOKernel(Self.setup { $0.regions = Self.regions(migration: false) })
        #expect(thrownError { try discover(fake) } == .noMigrationRegion(device: "0000:01:00.0", regionsScanned: 3))
        #expect(fake.openDescriptors.isEmpty)
    }

    @Test func aMigrationRegionSmallerThanTheHeaderIsRefused() {
        let fake = FakeVFIOKernel(Self.setup { $0.regions = Self.regions(migrationSize: 32) })
        #expect(thrownError { try discover(fake) }?.kind == "protocolViolation")
        #expect(fake.openDescriptors.isEmpty)
    }

    @Test func aMissingGroupNamesItsPath() {
        let fake = FakeVFIOKernel(Self.setup(), failing: ["open /dev/vfio/42": .noSuchFileOrDirectory])
        #expect(thrownError { try discover(fake) } == .noSuchGroup(path: "/dev/vfio/42", errno: .noSuchFileOrDirectory))
        #expect(fake.openDescriptors.isEmpty)
    }

    /// Fails each call of a successful discovery in turn: whichever fails, the
    /// error is typed and every descriptor opened before it is closed.
    @Test func everyFailurePathClosesEveryDescriptor() throws {
        let reference = FakeVFIOKernel(Self.setup())
        _ = try discover(reference)
        let steps = reference.calls.filter { !$0.hasPrefix("close") }
        for (index, step) in steps.enumerated() {
            let fake = FakeVFIOKernel(Self.setup(), failAt: (index, .ioError))
            #expect(thrownError { try discover(fake) } != nil, "discovery survived a failing \(step)")
            #expect(fake.openDescriptors.isEmpty, "a failing \(step) (call \(index)) leaks \(fake.openDescriptors)")
        }
    }

    @Test func fieldAccessesAreRetriedWhenInterruptedAndNeverSplit() throws {
        let path = "/region"
        var setup = Self.setup()
        setup.files[path] = [UInt8](repeating: 0, count: 4096)
        let interrupted = FakeVFIOKernel(setup, interruptions: 3)
        let region = try FileRegion(path: path, kernel: interrupted.kernel)
        try region.write64(0x1122_3344_5566_7788, at: MigrationInfo.Field.dataSize.offset)
        #expect(try region.read64(at: MigrationInfo.Field.dataSize.offset) == 0x1122_3344_5566_7788)
        #expect(interrupted.calls.filter { $0 == "pwrite" }.count == 4, "three EINTRs, then the whole field")

        // A partial field access is an error, not two narrower accesses.
        let short = FakeVFIOKernel(setup, maxTransfer: 4)
        let shortRegion = try FileRegion(path: path, kernel: short.kernel)
        #expect(thrownError { try shortRegion.read64(at: MigrationInfo.Field.dataSize.offset) } == .shortTransfer(.read, offset: MigrationInfo.Field.dataSize.offset, expected: 8, transferred: 4))
        // Data ranges loop over short and interrupted transfers.
        let bytes = (0..<300).map { UInt8(truncatingIfNeeded: $0) }
        try shortRegion.writeBytes(bytes, at: 1024)
        #expect(try shortRegion.readBytes(count: 300, at: 1024) == bytes)
        let failing = FakeVFIOKernel(setup, failing: ["pread": .ioError])
        let failingRegion = try FileRegion(path: path, kernel: failing.kernel)
        #expect(thrownError { try failingRegion.read32(at: 0) }?.errnoCode == .ioError)
    }

    @Test func fileRegionClosesWhatItOpenedOnEveryPath() throws {
        var setup = Self.setup()
        setup.files["/tiny"] = [UInt8](repeating: 0, count: 16)
        setup.files["/region"] = [UInt8](repeating: 0, count: 4096)
        let fake = FakeVFIOKernel(setup, failing: ["fstat": .ioError])
        #expect(thrownError { try FileRegion(path: "/region", kernel: fake.kernel) } == .systemCall("fstat", path: "/region", errno: .ioError))
        let tiny = FakeVFIOKernel(setup)
        #expect(thrownError { try FileRegion(path: "/tiny", kernel: tiny.kernel) }?.kind == "invalidArgument")
        do {
            let region = try FileRegion(path: "/region", kernel: tiny.kernel)
            #expect(tiny.openDescriptors.count == 1 && region.regionSize == 4096)
        }
        #expect(fake.openDescriptors.isEmpty && tiny.openDescriptors.isEmpty)
    }

    @Test func guestMemoryKeepsOnlyItsMappingAndReleasesIt() throws {
        var setup = Self.setup()
        setup.files["/guest"] = []
        setup.files["/guest4k"] = [UInt8](repeating: 0, count: 4096)
        let fake = FakeVFIOKernel(setup)
        var memory: GuestMemory? = try GuestMemory(path: "/guest", size: 8 * 4096, create: true, pageSize: 4096, kernel: fake.kernel)
        // One descriptor stays open for SEEK_DATA (holes are zero pages nobody need write).
        #expect(fake.openDescriptors.count == 1 && fake.mappingCount == 1, "the file and its mapping, nothing else")
        #expect(fake.file("/guest")?.count == 8 * 4096)
        try memory?.writePages(startPFN: 7, bytes: [UInt8](repeating: 9, count: 4096))
        #expect(try memory?.readPages(startPFN: 7, count: 1) == [UInt8](repeating: 9, count: 4096))
        try memory?.populate()
        try memory?.sync()
        memory = nil
        #expect(fake.mappingCount == 0 && fake.openDescriptors.isEmpty)

        for step in ["fstat", "ftruncate", "mmap"] {
            let failing = FakeVFIOKernel(setup, failing: [step: .ioError])
            #expect(thrownError { try GuestMemory(path: "/guest", size: 4096, create: true, pageSize: 4096, kernel: failing.kernel) }?.errnoCode == .ioError)
            #expect(failing.openDescriptors.isEmpty && failing.mappingCount == 0, "a failing \(step) leaks")
        }
        let anonymous = FakeVFIOKernel(setup, failing: ["mmap": .ioError])
        #expect(thrownError { try GuestMemory(anonymousNamed: "g", size: 4096, pageSize: 4096, kernel: anonymous.kernel) } == .systemCall("mmap guest memory", path: "g", errno: .ioError))
        #expect(anonymous.openDescriptors.isEmpty)
        // Kernels before 5.14 lack MADV_POPULATE_WRITE (EINVAL): populating is skipped, not failed.
        let old = FakeVFIOKernel(setup, failing: ["madvise": .invalidArgument])
        try GuestMemory(path: "/guest4k", size: nil, create: false, pageSize: 4096, kernel: old.kernel).populate()
        let broken = FakeVFIOKernel(setup, failing: ["madvise": .ioError])
        #expect(thrownError { try GuestMemory(path: "/guest4k", size: nil, create: false, pageSize: 4096, kernel: broken.kernel).populate() }?.errnoCode == .ioError)
    }

    @Test func retryingOnInterruptRetriesOnlyEINTR() {
        var attempts = 0
        let value = try? retryingOnInterrupt { () throws(Errno) -> Int in
            attempts += 1
            if attempts < 3 { throw .interrupted }
            return 7
        }
        #expect(value == 7 && attempts == 3)
        attempts = 0
        #expect(throws: Errno.ioError) {
            try retryingOnInterrupt { () throws(Errno) in
                attempts += 1
                throw .ioError
            }
        }
        #expect(attempts == 1)
    }

    @Test func anErrnoPrintsItsTextThenItsName() {
        #expect(Errno.inappropriateIOCTLForDevice.explanation == "Inappropriate ioctl for device (ENOTTY)")
        #expect(Errno.noSuchFileOrDirectory.explanation == "No such file or directory (ENOENT)")
        #expect(Errno(rawValue: 4095).symbolicName == "errno 4095")   // no name: still the number
    }
}
