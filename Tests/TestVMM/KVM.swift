import CKVM
import Glibc
import SystemErrno
import SystemPackage

// Thin typed wrappers of the KVM ioctls the test VMM uses (the LWN "Using the KVM
// API" sequence): one class per descriptor, each closing its own.

/// Runs an ioctl; its non-negative result, or the errno named after `name`.
private func kvmIoctl(_ fd: Int32, _ request: UInt, _ name: String, argument: UnsafeMutableRawPointer? = nil, value: Int32 = 0) throws(KVMError) -> Int32 {
    while true {
        let rc = argument.map { Glibc.ioctl(fd, request, $0) } ?? Glibc.ioctl(fd, request, value)
        if rc >= 0 { return rc }
        let error = Errno.current
        if error != .interrupted { throw .ioctl(name, errno: error) }
    }
}

/// `/dev/kvm`: the stable API (version 12) or an error saying why not.
public final class KVMSystem: @unchecked Sendable {  // owns the /dev/kvm descriptor
    public static let path = "/dev/kvm"
    let fd: Int32

    public init() throws(KVMError) {
        let fd = open(Self.path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw .unavailable(path: Self.path, errno: .current) }
        self.fd = fd
        let version = try kvmIoctl(fd, CKVM_GET_API_VERSION, "KVM_GET_API_VERSION")
        guard version == CKVM_API_VERSION else { throw .apiVersion(version) }
    }

    deinit { close(fd) }

    public func createVM() throws(KVMError) -> KVMVirtualMachine {
        KVMVirtualMachine(fd: try kvmIoctl(fd, CKVM_CREATE_VM, "KVM_CREATE_VM"), system: self)
    }

    /// Bytes of the per-vCPU `kvm_run` area to map.
    var vcpuMmapSize: Int {
        get throws(KVMError) { Int(try kvmIoctl(fd, CKVM_GET_VCPU_MMAP_SIZE, "KVM_GET_VCPU_MMAP_SIZE")) }
    }
}

/// One VM: its memory slots, its vCPUs, its dirty log.
public final class KVMVirtualMachine: @unchecked Sendable {  // owns the VM descriptor
    let fd: Int32
    let system: KVMSystem

    init(fd: Int32, system: KVMSystem) { self.fd = fd; self.system = system }
    deinit { close(fd) }

    /// Guest-physical [address, address + memory.byteCount) backed by `memory`;
    /// `logDirtyPages` makes KVM record every page the guest writes from now on.
    public func setMemoryRegion(slot: UInt32, guestPhysicalAddress: UInt64, memory: SharedMemoryFile, logDirtyPages: Bool) throws(KVMError) {
        var region = kvm_userspace_memory_region(
            slot: slot, flags: logDirtyPages ? CKVM_MEM_LOG_DIRTY_PAGES : 0, guest_phys_addr: guestPhysicalAddress,
            memory_size: UInt64(memory.byteCount), userspace_addr: memory.userspaceAddress)
        _ = try kvmIoctl(fd, CKVM_SET_USER_MEMORY_REGION, "KVM_SET_USER_MEMORY_REGION", argument: &region)
    }

    public func createVCPU(id: Int32) throws(KVMError) -> KVMVCPU {
        let vcpuFD = try kvmIoctl(fd, CKVM_CREATE_VCPU, "KVM_CREATE_VCPU", value: id)
        do throws(KVMError) { return try KVMVCPU(fd: vcpuFD, mmapSize: try system.vcpuMmapSize, vm: self) } catch {
            close(vcpuFD)
            throw error
        }
    }

    /// KVM_GET_DIRTY_LOG for `slot` of `pageCount` pages: the pages written since
    /// the previous call (KVM clears its log and write-protects them again), one
    /// bit per page in 64-bit words — the layout of docs/EVENTS.md's bitmap.
    public func dirtyLog(slot: UInt32, pageCount: Int) throws(KVMError) -> [UInt64] {
        var words = [UInt64](repeating: 0, count: (pageCount + 63) / 64)
        let result = words.withUnsafeMutableBytes { buffer in
            var log = ckvm_dirty_log(slot, buffer.baseAddress)
            return Result { () throws(KVMError) in try kvmIoctl(fd, CKVM_GET_DIRTY_LOG, "KVM_GET_DIRTY_LOG", argument: &log) }
        }
        _ = try result.get()
        return words
    }
}

/// Why KVM_RUN returned.
public enum VCPUExit: Sendable, Equatable {
    /// `out PORT, al`: the byte written.
    case output(port: UInt16, value: UInt8)
    case halt
    case other(reason: UInt32)
}

/// One vCPU and its mapped `kvm_run` area.
public final class KVMVCPU: @unchecked Sendable {  // owns the vCPU descriptor and the kvm_run mapping; run by one thread
    let fd: Int32
    private let run: UnsafeMutablePointer<kvm_run>
    private let mmapSize: Int
    let vm: KVMVirtualMachine

    init(fd: Int32, mmapSize: Int, vm: KVMVirtualMachine) throws(KVMError) {
        guard let p = mmap(nil, mmapSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            throw .mapping("the vCPU's kvm_run area", errno: .current)
        }
        self.fd = fd
        self.mmapSize = mmapSize
        self.vm = vm
        run = p.bindMemory(to: kvm_run.self, capacity: 1)
    }

    deinit {
        munmap(run, mmapSize)
        close(fd)
    }

    /// Real mode at CS:IP = 0:`ip`, DS = 0: interrupts off, direction flag clear.
    public func resetToRealMode(ip: UInt64) throws(KVMError) {
        var sregs = kvm_sregs()
        _ = try kvmIoctl(fd, CKVM_GET_SREGS, "KVM_GET_SREGS", argument: &sregs)
        sregs.cs.base = 0  // the reset vector's CS is 0xF000 (base 0xFFFF0000): move it to 0
        sregs.cs.selector = 0
        sregs.ds.base = 0
        sregs.ds.selector = 0
        _ = try kvmIoctl(fd, CKVM_SET_SREGS, "KVM_SET_SREGS", argument: &sregs)
        var regs = kvm_regs()
        regs.rip = ip
        regs.rflags = 0x2  // bit 1 is reserved and must be set; IF = 0, DF = 0
        _ = try kvmIoctl(fd, CKVM_SET_REGS, "KVM_SET_REGS", argument: &regs)
    }

    /// Runs the guest until its next exit to this process.
    public func runUntilExit() throws(KVMError) -> VCPUExit {
        _ = try kvmIoctl(fd, CKVM_RUN, "KVM_RUN")
        switch run.pointee.exit_reason {
        case CKVM_EXIT_IO where ckvm_run_io_direction(run) == UInt8(CKVM_EXIT_IO_OUT):
            return .output(port: ckvm_run_io_port(run), value: ckvm_run_io_byte(run))
        case CKVM_EXIT_HLT:
            return .halt
        case let reason:
            return .other(reason: reason)
        }
    }
}
