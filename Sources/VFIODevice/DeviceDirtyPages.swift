import SystemPackage

/// Dirty pages logged by the device itself (`VFIO_DEVICE_FEATURE` DMA_LOGGING_START /
/// REPORT / STOP, Linux 6.1+; mlx5, pds, the mtty stubs): the third `DirtyPageSource`,
/// feeding the same DIRTY_BITMAP frames. Guest PFN p is IOVA `iovaBase + p * pageSize`.
///
/// Logging is not tied to the migration state (header: "this API is not connected to
/// MIG_DEVICE_STATE"): START at the beginning of pre-copy, STOP on every path out
/// (the engine calls `stop()` after success and in every rollback).
public final class DeviceDMALogDirtyPageSource: DirtyPageSource {
    public let device: String
    public let deviceFD: Int32
    public let iovaBase: UInt64
    /// Guest memory tracked, as one range [iovaBase, iovaBase + guestBytes).
    public let guestBytes: UInt64
    /// The page size asked for at START (a hint; the device writes back its own).
    public let pageSize: UInt64
    private let kernel: VFIOKernel

    public private(set) var started = false
    /// The page size the device chose at START.
    public private(set) var loggingPageSize: UInt64?
    /// REPORTs that failed and were answered "all dirty", as the header requires.
    public private(set) var reportFailures = 0
    public private(set) var lastReportError: DeviceError?

    public init(device: VFIOMigrationV2, guestBytes: UInt64, pageSize: UInt64 = 4096, iovaBase: UInt64 = 0) {
        self.device = device.name; self.deviceFD = device.deviceFD; self.kernel = device.kernel
        self.guestBytes = guestBytes; self.pageSize = pageSize; self.iovaBase = iovaBase
    }

    /// PROBE|DMA_LOGGING_START (argsz 8), as QEMU asks: 0 = supported, ENOTTY = no `log_ops`.
    public static func isSupported(by device: VFIOMigrationV2) throws(DeviceError) -> Bool {
        var arg = V2Argument.probeDMALogging()
        do throws(Errno) {
            _ = try retryingOnInterrupt { () throws(Errno) in
                try arg.withArgument { (a) throws(Errno) in try device.kernel.ioctl(device.deviceFD, VFIOv2.deviceFeature, a) }
            }
            return true
        } catch where error == .inappropriateIOCTLForDevice {
            return false
        } catch {
            throw .v2Feature(device: device.name, operation: "VFIO_DEVICE_FEATURE PROBE DMA_LOGGING_START", errno: error)
        }
    }

    public func start() throws(DeviceError) {
        guard !started, guestBytes > 0 else { return }   // nothing to log: START with no range is EINVAL
        var ranges = V2Argument.dmaLoggingRanges([(iovaBase, guestBytes)])
        var chosen: UInt64 = 0
        try ranges.withArgument { (rangesArg) throws(DeviceError) in
            guard case .buffer(let r) = rangesArg else { return }
            // The control struct carries the ranges' address: the kernel copies them in
            // while `r` is pinned here (copy_from_user).
            var arg = V2Argument.dmaLoggingStart(pageSize: pageSize, rangeCount: 1, rangesAddress: UInt64(UInt(bitPattern: r.baseAddress)))
            try feature(&arg, "VFIO_DEVICE_FEATURE SET DMA_LOGGING_START")
            chosen = arg.u64(at: 8)
        }
        started = true
        loggingPageSize = chosen
    }

    public func stop() throws(DeviceError) {
        guard started else { return }
        started = false   // a failed STOP is reported, never retried in a loop
        var arg = V2Argument.dmaLoggingStop()
        try feature(&arg, "VFIO_DEVICE_FEATURE SET DMA_LOGGING_STOP")
    }

    /// One REPORT for the window: reads and clears the log. An error means "the log is
    /// corrupted, consider all memory dirty" (header): the window is answered ALL.
    public func query(startPFN: UInt64, pageSize: UInt64, totalPFNs: UInt64) throws(DeviceError) -> [DirtySegment] {
        guard totalPFNs > 0 else { return [] }
        guard pageSize >= 4096, pageSize & (pageSize - 1) == 0 else {
            throw DeviceError.invalidArgument(operation: "DMA_LOGGING_REPORT", detail: "page size \(pageSize) is not a power of two ≥ 4096")
        }
        let (length, o1) = totalPFNs.multipliedReportingOverflow(by: pageSize)
        let (offset, o2) = startPFN.multipliedReportingOverflow(by: pageSize)
        let (iova, o3) = iovaBase.addingReportingOverflow(offset)
        guard !o1, !o2, !o3, totalPFNs <= 1 << 36 else {
            throw DeviceError.invalidArgument(operation: "DMA_LOGGING_REPORT", detail: "PFN range [\(startPFN), +\(totalPFNs)) overflows the IOVA space")
        }
        // "Never clears or initialises the user bitmap": zeroed here, whole u64 words.
        var bitmap = [UInt8](repeating: 0, count: IOMMUDirtyBitmap.bitmapBufferSize(pfnCount: totalPFNs))
        do throws(DeviceError) {
            try bitmap.withMutableBytes { (bits) throws(DeviceError) in
                var arg = V2Argument.dmaLoggingReport(iova: iova, length: length, pageSize: pageSize,
                                                      bitmapAddress: UInt64(UInt(bitPattern: bits.baseAddress)))
                try feature(&arg, "VFIO_DEVICE_FEATURE GET DMA_LOGGING_REPORT")
            }
        } catch {
            reportFailures += 1
            lastReportError = error
            return [DirtySegment(startPFN: startPFN, pageSize: pageSize, pfnCount: totalPFNs, pages: .all)]
        }
        // Same layout as the IOMMU form: u64 word n/64, bit n%64, LSB first.
        return [try IOMMUDirtyBitmap.segment(fromBitmap: bitmap, startPFN: startPFN, pageSize: pageSize, pfnCount: totalPFNs)]
    }

    private func feature(_ arg: inout UAPIBuffer, _ operation: String) throws(DeviceError) {
        do throws(Errno) {
            _ = try retryingOnInterrupt { () throws(Errno) in
                try arg.withArgument { (a) throws(Errno) in try kernel.ioctl(deviceFD, VFIOv2.deviceFeature, a) }
            }
        } catch {
            throw .v2Feature(device: device, operation: operation, errno: error)
        }
    }
}
