/// The simulated kernel's `copy_from_user` / `copy_to_user`: DMA logging passes the
/// ranges array and the report bitmap as user addresses inside the ioctl argument,
/// and a kernel reads and writes them there. This is the one place the simulator
/// turns such an address into memory; the caller keeps that memory pinned for the
/// duration of the ioctl (as `DeviceDMALogDirtyPageSource` does).
enum UserMemory {
    /// nil for a null address (the kernel answers EFAULT).
    static func copyIn(address: UInt64, count: Int) -> [UInt8]? {
        guard count > 0 else { return [] }
        guard let p = UnsafeRawPointer(bitPattern: UInt(address)) else { return nil }
        return Array(UnsafeRawBufferPointer(start: p, count: count))
    }

    /// false for a null address.
    static func copyOut(_ bytes: [UInt8], to address: UInt64) -> Bool {
        guard !bytes.isEmpty else { return true }
        guard let p = UnsafeMutableRawPointer(bitPattern: UInt(address)) else { return false }
        bytes.withUnsafeBytes { UnsafeMutableRawBufferPointer(start: p, count: bytes.count).copyMemory(from: $0) }
        return true
    }
}
