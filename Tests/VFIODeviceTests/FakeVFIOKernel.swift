import CVFIO
import Foundation
import SystemPackage
@testable import VFIODevice

/// Plays the Linux VFIO kernel through the `VFIOKernel` seam: a container, one
/// group with one device and its region-info buffers, plain files and memfds for
/// regions and guest memory. It enforces the kernel's order (SET_CONTAINER before
/// SET_IOMMU before GET_DEVICE_FD), answers GET_REGION_INFO the way vfio-pci does
/// when the capability chain does not fit, and tracks every descriptor and
/// mapping, so a test can assert that nothing leaks on any path.
final class FakeVFIOKernel: @unchecked Sendable {  // all state guarded by `lock`
    struct Setup {
        var containerPath = "/dev/vfio/vfio"
        var groupPath = "/dev/vfio/42"
        var deviceName = "0000:01:00.0"
        var apiVersion = Int32(CVFIO_API_VERSION)
        var viable = true
        var offersType1v2 = true
        /// Full region-info buffers (header + capability chain) by index; nil: EINVAL.
        var regions: [[UInt8]?] = []
        /// Files the fake knows, by path (regions, guest memory).
        var files: [String: [UInt8]] = [:]
    }

    enum Node: Equatable { case container, group, device, file(String), memfd(Int) }

    private let lock = NSLock()
    private var setup: Setup
    private var nodes: [Int32: Node] = [:]
    private var nextFD: Int32 = 100
    private var containerSet = false
    private var iommuSet = false
    private var memfds: [[UInt8]] = []
    private var mappings: [UnsafeMutableRawPointer: Int] = [:]
    private var log: [String] = []
    private var callCount = 0
    /// Fail the call with this 0-based index (closes are not counted).
    private let failAt: (index: Int, errno: Errno)?
    /// Fail every call of this name, before doing anything.
    private let failing: [String: Errno]
    /// Interrupt this many preads/pwrites (EINTR, nothing transferred) before serving them.
    private var interruptions: Int
    /// Serve at most this many bytes per pread/pwrite (short transfers).
    private let maxTransfer: Int

    init(_ setup: Setup, failAt: (index: Int, errno: Errno)? = nil, failing: [String: Errno] = [:],
         interruptions: Int = 0, maxTransfer: Int = .max) {
        self.setup = setup
        self.failAt = failAt
        self.failing = failing
        self.interruptions = interruptions
        self.maxTransfer = maxTransfer
    }

    /// Every call so far, in order ("open /dev/vfio/vfio", "VFIO_GROUP_GET_STATUS", …).
    var calls: [String] { lock.withLock { log } }
    var openDescriptors: [Int32: Node] { lock.withLock { nodes } }
    var mappingCount: Int { lock.withLock { mappings.count } }
    func file(_ path: String) -> [UInt8]? { lock.withLock { setup.files[path] } }

    var kernel: VFIOKernel {
        VFIOKernel(
            open: { path, _, _ throws(Errno) in try self.call("open \(path)") { () throws(Errno) in try self.open(path) } },
            close: { fd throws(Errno) in try self.close(fd) },
            ioctl: { fd, request, argument throws(Errno) in
                try self.call(Self.name(of: request)) { () throws(Errno) in try self.ioctl(fd, request, argument) }
            },
            pread: { fd, buffer, offset throws(Errno) in
                try self.call("pread") { () throws(Errno) in try self.transfer(fd, offset, count: buffer.count) { file, at, n in
                    file.withUnsafeBytes { src in
                        UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n]).copyMemory(from: UnsafeRawBufferPointer(rebasing: src[at..<(at + n)]))
                    }
                } }
            },
            pwrite: { fd, buffer, offset throws(Errno) in
                try self.call("pwrite") { () throws(Errno) in try self.transfer(fd, offset, count: buffer.count) { file, at, n in
                    file.replaceSubrange(at..<(at + n), with: buffer.prefix(n))
                } }
            },
            fileSize: { fd throws(Errno) in try self.call("fstat") { () throws(Errno) in try self.contents(fd).count } },
            truncate: { fd, size throws(Errno) in
                try self.call("ftruncate") { () throws(Errno) in try self.resize(fd, Int(size)) }
            },
            memfdCreate: { name throws(Errno) in try self.call("memfd_create \(name)") { () throws(Errno) in self.newMemfd() } },
            mmap: { fd, length throws(Errno) in try self.call("mmap") { () throws(Errno) in try self.map(fd, length) } },
            munmap: { address, length throws(Errno) in try self.call("munmap") { () throws(Errno) in try self.unmap(address, length) } },
            madvise: { _, _, _ throws(Errno) in try self.call("madvise") { () throws(Errno) in } },
            msync: { _, _ throws(Errno) in try self.call("msync") { () throws(Errno) in } })
    }

    // MARK: - Bookkeeping

    /// Logs the call, applies injected failures, then runs it under the lock.
    private func call<T>(_ name: String, _ body: () throws(Errno) -> T) throws(Errno) -> T {
        lock.lock()
        defer { lock.unlock() }
        log.append(name)
        defer { callCount += 1 }
        if let e = failing[name] { throw e }
        if let failAt, failAt.index == callCount { throw failAt.errno }
        return try body()
    }

    private func add(_ node: Node) -> Int32 {
        defer { nextFD += 1 }
        nodes[nextFD] = node
        return nextFD
    }

    private func node(_ fd: Int32) throws(Errno) -> Node {
        guard let node = nodes[fd] else { throw .badFileDescriptor }
        return node
    }

    private func open(_ path: String) throws(Errno) -> Int32 {
        if path == setup.containerPath { return add(.container) }
        if path == setup.groupPath { return add(.group) }
        guard setup.files[path] != nil else { throw .noSuchFileOrDirectory }
        return add(.file(path))
    }

    private func close(_ fd: Int32) throws(Errno) {
        lock.lock()
        defer { lock.unlock() }
        log.append("close \(fd)")
        guard nodes.removeValue(forKey: fd) != nil else { throw .badFileDescriptor }
    }

    private func newMemfd() -> Int32 {
        memfds.append([])
        return add(.memfd(memfds.count - 1))
    }

    private func contents(_ fd: Int32) throws(Errno) -> [UInt8] {
        switch try node(fd) {
        case .file(let path): return setup.files[path] ?? []
        case .device: return setup.files[setup.deviceName] ?? []
        case .memfd(let i): return memfds[i]
        default: throw .invalidArgument
        }
    }

    private func resize(_ fd: Int32, _ size: Int) throws(Errno) {
        var bytes = try contents(fd)
        bytes = Array(bytes.prefix(size)) + [UInt8](repeating: 0, count: max(0, size - bytes.count))
        try store(fd, bytes)
    }

    private func store(_ fd: Int32, _ bytes: [UInt8]) throws(Errno) {
        switch try node(fd) {
        case .file(let path): setup.files[path] = bytes
        case .device: setup.files[setup.deviceName] = bytes
        case .memfd(let i): memfds[i] = bytes
        default: throw .invalidArgument
        }
    }

    /// pread/pwrite on a file, a memfd, or the device fd (whose regions are the
    /// file named after the device, at the offsets its region infos give).
    private func transfer(_ fd: Int32, _ offset: off_t, count: Int,
                          _ move: (inout [UInt8], Int, Int) -> Void) throws(Errno) -> Int {
        if interruptions > 0 {
            interruptions -= 1
            throw .interrupted
        }
        var bytes = try contents(fd)
        let at = Int(offset)
        let n = max(0, min(count, maxTransfer, bytes.count - at))
        if n > 0 { move(&bytes, at, n) }
        try store(fd, bytes)
        return n
    }

    /// Mappings are private heap copies: the fake checks lengths, not sharing.
    private func map(_ fd: Int32, _ length: Int) throws(Errno) -> UnsafeMutableRawPointer {
        guard try contents(fd).count >= length else { throw Errno(rawValue: ENXIO) }
        let p = UnsafeMutableRawPointer.allocate(byteCount: length, alignment: 4096)
        p.initializeMemory(as: UInt8.self, repeating: 0, count: length)
        mappings[p] = length
        return p
    }

    private func unmap(_ address: UnsafeMutableRawPointer, _ length: Int) throws(Errno) {
        guard mappings.removeValue(forKey: address) == length else { throw .invalidArgument }
        address.deallocate()
    }

    // MARK: - ioctl

    static func name(of request: UInt) -> String {
        switch request {
        case UInt(CVFIO_GET_API_VERSION): return "VFIO_GET_API_VERSION"
        case UInt(CVFIO_CHECK_EXTENSION): return "VFIO_CHECK_EXTENSION"
        case UInt(CVFIO_SET_IOMMU): return "VFIO_SET_IOMMU"
        case UInt(CVFIO_GROUP_GET_STATUS): return "VFIO_GROUP_GET_STATUS"
        case UInt(CVFIO_GROUP_SET_CONTAINER): return "VFIO_GROUP_SET_CONTAINER"
        case UInt(CVFIO_GROUP_GET_DEVICE_FD): return "VFIO_GROUP_GET_DEVICE_FD"
        case UInt(CVFIO_DEVICE_GET_INFO): return "VFIO_DEVICE_GET_INFO"
        case UInt(CVFIO_DEVICE_GET_REGION_INFO): return "VFIO_DEVICE_GET_REGION_INFO"
        case UInt(CVFIO_IOMMU_DIRTY_PAGES): return "VFIO_IOMMU_DIRTY_PAGES"
        default: return "ioctl 0x\(String(request, radix: 16))"
        }
    }

    private func ioctl(_ fd: Int32, _ request: UInt, _ argument: VFIOKernel.IoctlArgument) throws(Errno) -> Int32 {
        let node = try node(fd)
        switch (node, request, argument) {
        case (.container, UInt(CVFIO_GET_API_VERSION), .none):
            return setup.apiVersion
        case (.container, UInt(CVFIO_CHECK_EXTENSION), .integer(let type)):
            return setup.offersType1v2 && type == Int32(CVFIO_TYPE1v2_IOMMU) ? 1 : 0
        case (.container, UInt(CVFIO_SET_IOMMU), .integer(let type)):
            guard containerSet, setup.offersType1v2, type == Int32(CVFIO_TYPE1v2_IOMMU) else { throw .invalidArgument }
            iommuSet = true
            return 0
        case (.group, UInt(CVFIO_GROUP_GET_STATUS), .buffer(let b)):
            guard try argsz(b) >= 8 else { throw .invalidArgument }
            b.storeBytes(of: setup.viable ? CVFIO_GROUP_FLAGS_VIABLE : 0, toByteOffset: 4, as: UInt32.self)
            return 0
        case (.group, UInt(CVFIO_GROUP_SET_CONTAINER), .buffer(let b)):
            guard b.count >= 4, nodes[b.loadUnaligned(as: Int32.self)] == .container else { throw .badFileDescriptor }
            guard setup.viable else { throw Errno(rawValue: EPERM) }
            containerSet = true
            return 0
        case (.group, UInt(CVFIO_GROUP_GET_DEVICE_FD), .buffer(let b)):
            guard iommuSet else { throw .invalidArgument }
            guard String(decoding: b.prefix { $0 != 0 }, as: UTF8.self) == setup.deviceName else { throw Errno(rawValue: ENODEV) }
            return add(.device)
        case (.device, UInt(CVFIO_DEVICE_GET_INFO), .buffer(let b)):
            guard try argsz(b) >= 20 else { throw .invalidArgument }
            b.storeBytes(of: UInt32(setup.regions.count), toByteOffset: 8, as: UInt32.self)
            return 0
        case (.device, UInt(CVFIO_DEVICE_GET_REGION_INFO), .buffer(let b)):
            return try regionInfo(b)
        default:
            throw .inappropriateIOCTLForDevice  // what the kernel says to an ioctl the descriptor does not know
        }
    }

    /// argsz as the caller set it; a real kernel would fault reading past the buffer.
    private func argsz(_ b: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        guard b.count >= 4 else { throw Errno(rawValue: EFAULT) }
        let argsz = Int(b.loadUnaligned(as: UInt32.self))
        guard argsz <= b.count else { throw Errno(rawValue: EFAULT) }
        return argsz
    }

    /// vfio-pci's answer: the 32-byte header always; the capability chain only when
    /// argsz leaves room for it, else argsz grows to the size needed and cap_offset is 0.
    private func regionInfo(_ b: UnsafeMutableRawBufferPointer) throws(Errno) -> Int32 {
        let argsz = try argsz(b)
        guard argsz >= 32 else { throw .invalidArgument }
        let index = Int(b.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
        guard index < setup.regions.count, var full = setup.regions[index] else { throw .invalidArgument }
        if argsz < full.count {
            VFIORegionInfo.put(&full, 0, UInt64(full.count), 4)
            VFIORegionInfo.put(&full, 12, 0, 4)
            full = Array(full.prefix(32))
        } else {
            VFIORegionInfo.put(&full, 0, UInt64(argsz), 4)
        }
        full.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: b[0..<$0.count]).copyMemory(from: $0) }
        return 0
    }
}
