import Foundation
import MigrationEngine
import VFIODevice
import VFIOSimulator

// The v2 device interface on the command line: `sim:interface=v2,…` and
// `vfio:GROUP/DEVICE,interface=v1|v2`, kept apart from DeviceSpec.swift's v1 forms.

extension DeviceSpec {
    /// `sim:interface=v2[,precopy=0|1,p2p=0|1,dmalog=0|1,precopyend=enomsg|zero,datasize=0|1,state=SIZE,seed=N,dirty=PAGES,churn=SIZE,chunk=SIZE]`.
    /// `chunk` is the size of the DEVICE_DATA chunks read from the data_fd (the stream has no
    /// boundaries of its own). Defaults: PRE_COPY and P2P offered, DMA logging, ENOMSG.
    static func simV2(_ parts: [String], spec text: String) throws -> Backend {
        var config = SimulatedV2Device.Configuration()
        var chunk = 1 << 20
        func flag(_ value: String, _ key: String) throws -> Bool {
            switch value {
            case "1", "on", "yes": return true
            case "0", "off", "no": return false
            default: throw CLIError.badDevice(text, "\(key) must be 0 or 1")
            }
        }
        for p in parts where !p.isEmpty {
            let kv = p.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2 else { throw CLIError.badDevice(text, "sim option \(p) is not KEY=VALUE") }
            switch kv[0] {
            case "state": config.stateSize = Int(try parseSize(kv[1], what: "state"))
            case "seed": guard let v = UInt64(kv[1]) else { throw CLIError.badDevice(text, "seed must be a number") }; config.seed = v
            case "dirty": guard let v = Int(kv[1]), v >= 0 else { throw CLIError.badDevice(text, "dirty must be a page count") }; config.dirtyPagesPerStep = v
            case "churn": config.stateBytesPerStep = Int(try parseSize(kv[1], what: "churn"))
            case "chunk":
                chunk = Int(try parseSize(kv[1], what: "chunk"))
                guard chunk > 0 else { throw CLIError.badDevice(text, "chunk must be at least 1 byte") }
            case "precopy": if try flag(kv[1], "precopy") { config.flags.insert(.preCopy) } else { config.flags.remove(.preCopy) }
            case "p2p": if try flag(kv[1], "p2p") { config.flags.insert(.p2p) } else { config.flags.remove(.p2p) }
            case "dmalog": config.dmaLogging = try flag(kv[1], "dmalog")
            case "datasize": config.offersDataSize = try flag(kv[1], "datasize")
            case "precopyend":
                guard ["enomsg", "zero"].contains(kv[1]) else { throw CLIError.badDevice(text, "precopyend must be enomsg or zero") }
                config.precopyEndReturnsZero = kv[1] == "zero"
            default:
                throw CLIError.badDevice(text, "unknown sim interface=v2 option \(kv[0]) (state, seed, dirty, churn, chunk, precopy, p2p, dmalog, datasize, precopyend, compat)")
            }
        }
        guard config.stateSize > 0 else { throw CLIError.badDevice(text, "state must be at least 1 byte") }
        return .simV2(config, chunkBytes: chunk)
    }

    /// `interface=v1|v2` after `vfio:GROUP/DEVICE` (nothing: probe v2 first, then the region).
    static func vfioInterface(_ parts: ArraySlice<String>, spec text: String) throws -> VFIODiscovery.InterfaceChoice {
        var choice = VFIODiscovery.InterfaceChoice.auto
        for p in parts where !p.isEmpty {
            guard p.hasPrefix("interface="), let c = VFIODiscovery.InterfaceChoice(rawValue: String(p.dropFirst(10))), c != .auto else {
                throw CLIError.badDevice(text, "unknown vfio option \(p) (interface=v1|v2, compat)")
            }
            choice = c
        }
        return choice
    }
}

extension OpenedDevices {
    /// A device that speaks v2 (a simulated one, or a vfio: device whose GET MIGRATION
    /// answers), with its default compatibility string and dirty source; nil otherwise.
    mutating func openV2(_ spec: DeviceSpec, memory: GuestMemory?, dirty: DirtyMode) throws
        -> (device: MigrationDevice, compatibility: String, dirty: (any DirtyPageSource)?)? {
        let device: MigrationDevice
        let compatibility: String
        var iommu: VFIOV2Handle?
        switch spec.backend {
        case .simV2(let config, let chunk):
            let sim = SimulatedV2Device(configuration: config, guestMemory: memory)
            simulatedV2.append((spec.name, sim))
            device = try sim.migrationDevice(name: spec.name, chunkBytes: chunk)
            compatibility = "sim/v2 state=\(sim.configuration.stateSize)"
        case .vfio(let group, let name), .vfioForced(let group, let name, .v2):
            let interface: VFIODiscovery.InterfaceChoice = if case .vfioForced = spec.backend { .v2 } else { .auto }
            guard case .v2(let handle) = try VFIODiscovery.openMigratable(group: group, device: name, interface: interface) else {
                return nil   // no v2 here: the region, as before (a second open of the group)
            }
            device = try handle.migrationDevice(name: spec.name)
            compatibility = "vfio"
            iommu = handle
        default:
            return nil
        }
        let source = try Self.v2DirtySource(device, spec: spec, memory: memory, dirty: dirty, iommu: iommu?.iommuDirtyPageSource())
        return (device, compatibility, source)
    }

    /// A v2 device's dirty pages; `iommu`: the container's log, when we have a container.
    static func v2DirtySource(_ device: MigrationDevice, spec: DeviceSpec, memory: GuestMemory?, dirty: DirtyMode,
                              iommu: IOMMUDirtyPageSource?) throws -> (any DirtyPageSource)? {
        switch dirty {
        case .none, .vmm: return nil  // vmm: the guest's pages come from the VMM, not the device
        case .deviceLog:
            guard try DeviceDMALogDirtyPageSource.isSupported(by: device.v2!) else {
                throw CLIError.config("device \(spec.name): --dirty device-log, but the device does not offer DMA logging (PROBE DMA_LOGGING_START answers ENOTTY)")
            }
            return DeviceDMALogDirtyPageSource(device: device.v2!, guestBytes: memory?.size ?? 0, pageSize: UInt64(memory?.pageSize ?? 4096))
        case .iommu:
            guard let iommu else { throw CLIError.config(noContainer(spec)) }
            return iommu
        case .region:
            throw CLIError.config("device \(spec.name) speaks the v2 interface and has no migration region: use --dirty device-log, iommu or none")
        }
    }
}
