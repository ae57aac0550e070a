import VFIODevice

/// The source's devices and which of them left RUNNING: the one owner of moving
/// them out of RUNNING and of putting them back (rollback).
struct SourceDeviceSet {
    let devices: [SourceDevice]
    /// In the order they moved; rolled back in reverse.
    private(set) var leftRunning: [Int] = []

    init(_ devices: [SourceDevice]) { self.devices = devices }

    var indices: Range<Int> { devices.indices }
    subscript(i: Int) -> SourceDevice { devices[i] }

    /// RUNNING → SAVING|RUNNING and dirty tracking on, device by device.
    mutating func startSaving() throws(MigrationFailure) {
        for (i, d) in devices.enumerated() {
            try deviceCall(d.name) { () throws(DeviceError) in try d.device.setState([.saving, .running]) }
            leftRunning.append(i)
            try deviceCall(d.name) { () throws(DeviceError) in try d.dirtyPages?.start() }
        }
    }

    /// SAVING|RUNNING → SAVING: the devices stop, downtime starts. v2 devices that
    /// offer P2P are all quiesced first, before any of them stops (docs/DEVICE.md);
    /// nothing for v1.
    func stop() throws(MigrationFailure) {
        for d in devices { try deviceCall(d.name) { () throws(DeviceError) in try d.device.quiesceP2P() } }
        for d in devices { try deviceCall(d.name) { () throws(DeviceError) in try d.device.setState([.saving]) } }
    }

    /// Before COMMIT: every device that left RUNNING runs again, the last moved first.
    /// Returns what could not be rolled back ("name: error"); empty when all run again.
    func rollBack() -> [String] {
        var problems: [String] = []
        for i in leftRunning.reversed() {
            let d = devices[i]
            do { try d.device.setState([.running]) } catch { problems.append("\(d.name): \(error)") }
            try? d.dirtyPages?.stop()
        }
        return problems
    }

    /// After RESUMED: the VM runs on the destination; SAVING → STOPPED.
    func release() {
        for d in devices {
            try? d.dirtyPages?.stop()
            try? d.device.setState([])
        }
    }
}

/// The destination's devices: whether any left the state it found it in, and the
/// only way to RUNNING (after COMMIT).
struct DestinationDeviceSet {
    let devices: [DestinationDevice]
    private(set) var touched = false

    init(_ devices: [DestinationDevice]) { self.devices = devices }

    /// → RESUMING, device by device.
    mutating func startResuming() throws(MigrationFailure) {
        for d in devices {
            touched = true
            try deviceCall(d.name) { () throws(DeviceError) in try d.device.setState([.resuming]) }
        }
    }

    /// Never RUNNING without COMMIT: once any device was touched, every one is left STOPPED.
    func abandon() {
        guard touched else { return }
        for d in devices { try? d.device.setState([]) }
    }

    /// After COMMIT: RESUMING → RUNNING in order; the first failure stops it there.
    func resume() throws(MigrationFailure) {
        for d in devices { try deviceCall(d.name) { () throws(DeviceError) in try d.device.setState([.running]) } }
    }
}
