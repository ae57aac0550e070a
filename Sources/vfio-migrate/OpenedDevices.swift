import Foundation
import MigrationEngine
import VFIODevice
import VFIOSimulator

/// The devices named on the command line, opened, with what the CLI needs
/// besides the engine: the simulated ones (workload, state dumps).
struct OpenedDevices {
    var devices: [MigrationDevice] = []
    var compatibility: [String] = []
    var dirtySources: [(any DirtyPageSource)?] = []
    var simulated: [(name: String, device: SimulatedDevice)] = []
    /// Simulated v2 devices (`sim:interface=v2,…`).
    var simulatedV2: [(name: String, device: SimulatedV2Device)] = []

    enum DirtyMode: String, CaseIterable {
        case region, iommu, none
        /// The v2 device's own DMA logging (VFIO_DEVICE_FEATURE DMA_LOGGING_*).
        case deviceLog = "device-log"
        /// The guest's own dirty pages from the VMM (control socket), and no
        /// device source; `--guest-dirty-log` adds them to any other mode.
        case vmm
    }

    /// `--iommu fd:N`: the VMM's container, kept open while its dirty source is used.
    var container: InheritedContainer?

    init(specs: [DeviceSpec], memory: GuestMemory?, dirty: DirtyMode,
         descriptors: HandedDescriptors = HandedDescriptors(table: nil), container: InheritedContainer? = nil) throws {
        self.container = container
        var seen = Set<String>()
        for spec in specs {
            guard seen.insert(spec.name).inserted else { throw CLIError.config("device \(spec.name) is named twice") }
            if case .vfioDescriptor(let reference, let text, let interface) = spec.backend {
                try openHanded(spec, reference: reference, text: text, interface: interface, memory: memory, dirty: dirty, descriptors: descriptors)
                continue
            }
            if let v2 = try openV2(spec, memory: memory, dirty: dirty) {
                devices.append(v2.device)
                compatibility.append(spec.compatibility ?? v2.compatibility)
                dirtySources.append(v2.dirty)
                continue
            }
            let region: any MigrationRegion
            let defaultCompat: String
            var handle: VFIODeviceHandle?
            switch spec.backend {
            case .sim(let config):
                let sim = SimulatedDevice(configuration: config, guestMemory: memory)
                simulated.append((spec.name, sim))
                region = sim
                defaultCompat = "sim/v1 state=\(config.stateSize)"
            case .file(let path, let offset, let size):
                region = try FileRegion(path: path, baseOffset: offset, size: size)
                defaultCompat = "file"
            case .fileDescriptor(let reference, let name, let offset, let size):
                let fd = try descriptors.resolve(reference, option: "--device \(spec.name)=file:\(name)")
                region = try FileRegion(descriptor: fd, name: name, baseOffset: offset, size: size)
                defaultCompat = "file"
            case .vfio(let group, let device), .vfioForced(let group, let device, _):
                // openV2 found no v2 interface (or interface=v1): the region.
                let h = try VFIODiscovery.open(group: group, device: device)
                handle = h
                region = try h.region()
                defaultCompat = "vfio"
            case .simV2, .vfioDescriptor:
                preconditionFailure("opened by openV2 / openHanded")
            }
            let device = MigrationDevice(name: spec.name, region: region)
            devices.append(device)
            compatibility.append(spec.compatibility ?? defaultCompat)
            dirtySources.append(try Self.regionDirtySource(device, spec: spec, dirty: dirty, iommu: handle?.iommuDirtyPageSource()))
        }
    }

    /// A v1 (region) device's dirty pages; `iommu`: the container's log, when we have a container.
    static func regionDirtySource(_ device: MigrationDevice, spec: DeviceSpec, dirty: DirtyMode,
                                  iommu: IOMMUDirtyPageSource?) throws -> (any DirtyPageSource)? {
        switch dirty {
        case .region: return RegionDirtyPageSource(device: device)
        case .none, .vmm: return nil
        case .deviceLog:
            throw CLIError.config("device \(spec.name): --dirty device-log needs a device with the v2 interface (DMA logging is a v2 feature)")
        case .iommu:
            // The container's dirty log (Linux 5.8 form) exists only for a VFIO device we opened, or the VMM's container.
            guard let iommu else { throw CLIError.config(noContainer(spec)) }
            return iommu
        }
    }

    static func noContainer(_ spec: DeviceSpec) -> String {
        if case .vfioDescriptor = spec.backend {
            return "device \(spec.name): --dirty iommu with a device the VMM passed needs --iommu fd:N (its container)"
        }
        return "device \(spec.name): --dirty iommu needs a vfio: backend (the container reports the dirty pages)"
    }

    var sourceDevices: [SourceDevice] {
        devices.indices.map { SourceDevice(device: devices[$0], dirtyPages: dirtySources[$0], compatibility: compatibility[$0]) }
    }
    var destinationDevices: [DestinationDevice] {
        devices.indices.map { DestinationDevice(device: devices[$0], compatibility: compatibility[$0]) }
    }

    /// Writes each simulated device's internal state to DIR/NAME.state.
    func dumpState(to directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for (name, sim) in simulated.map({ ($0.name, $0.device.stateSnapshot) }) + simulatedV2.map({ ($0.name, $0.device.stateSnapshot) }) {
            let path = (directory as NSString).appendingPathComponent("\(name).state")
            guard FileManager.default.createFile(atPath: path, contents: Data(sim())) else {
                throw CLIError.config("cannot write \(path)")
            }
        }
    }
}

/// Runs the simulated devices' workload (state churn, DMA into guest memory)
/// on its own thread while they are RUNNING.
final class SimWorkload: Sendable {
    private let task: PeriodicTask?

    init(devices: [SimulatedDevice], v2: [SimulatedV2Device] = [], intervalMs: Double) {
        guard !devices.isEmpty || !v2.isEmpty, intervalMs > 0 else { task = nil; return }
        task = PeriodicTask(name: "sim-workload", interval: .microseconds(Int64(intervalMs * 1000))) {
            for d in devices { d.workloadStep() }
            for d in v2 { d.workloadStep() }
            return true
        }
    }

    func stop() { task?.stop() }
}
