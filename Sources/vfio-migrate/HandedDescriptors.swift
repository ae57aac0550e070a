import ArgumentParser
import MigrationControl
import VFIODevice

/// Where the command line's `fd:` references lead: `fd:N` is a number inherited
/// at exec, `fd:NAME` a descriptor the VMM passed with `add-fd` (the control
/// server's table). The table keeps owning what it lends: every user duplicates.
struct HandedDescriptors {
    /// nil without `--control`.
    let table: DescriptorTable?

    /// `option` names the use for the refusal ("--memory fd:guest-ram").
    func resolve(_ reference: DescriptorReference, option: String) throws -> Int32 {
        switch reference {
        case .inherited(let fd): return fd
        case .named(let name):
            guard let fd = table?.descriptor(named: name) else {
                throw ValidationError("\(option): no descriptor named '\(name)' was passed with add-fd")
            }
            return fd
        }
    }
}

/// `--iommu fd:N|fd:NAME`: the VFIO container the VMM set up, for `--dirty iommu`
/// with devices it passed as `fd:` (we never opened their group, so we have no container).
struct IOMMUOption {
    let text: String
    let reference: DescriptorReference

    init(parsing text: String) throws {
        let parsed: DescriptorReference?
        do { parsed = try DescriptorReference(parsing: text) } catch { throw ValidationError("--iommu \(text): \(error)") }
        guard let parsed else { throw ValidationError("--iommu \(text): expected fd:N or fd:NAME (the container the VMM opened)") }
        self.text = text
        reference = parsed
    }

    var descriptorName: String? { if case .named(let name) = reference { name } else { nil } }

    /// Checked (a VFIO container, read-write, this API) and duplicated.
    func open(_ descriptors: HandedDescriptors) throws -> InheritedContainer {
        let fd = try descriptors.resolve(reference, option: "--iommu \(text)")
        return InheritedContainer(adopting: try InheritedVFIO.container(fd, what: "--iommu \(text)"))
    }
}

extension DeviceOptions {
    /// Every `add-fd` name the command line uses; not empty → the CLI waits for `start`.
    var descriptorNames: [String] {
        let devices = self.devices.compactMap { try? DeviceSpec(parsing: $0, checkFiles: false).descriptorName }
        let memory = self.memory.flatMap { try? DescriptorReference(parsing: $0) }.flatMap { if case .named(let n) = $0 { n } else { nil } }
        let iommu = self.iommu.flatMap { try? IOMMUOption(parsing: $0).descriptorName }
        return devices + [memory, iommu].compactMap { $0 }
    }
}

extension OpenedDevices {
    /// `--device NAME=fd:N`: the VMM's open VFIO device, checked, duplicated, then
    /// probed like a `vfio:` path (v2 first, then the region, unless `interface` says).
    mutating func openHanded(_ spec: DeviceSpec, reference: DescriptorReference, text: String, interface: VFIODiscovery.InterfaceChoice,
                             memory: GuestMemory?, dirty: DirtyMode, descriptors: HandedDescriptors) throws {
        let fd = try descriptors.resolve(reference, option: "--device \(spec.name)=\(text)")
        let owned = try InheritedVFIO.device(fd, what: "device \(spec.name) \(text)")
        let iommu = container?.dirtyPageSource()
        switch try VFIODiscovery.adopt(deviceFD: owned, name: spec.name, interface: interface) {
        case .v2(let handle):
            let device = try handle.migrationDevice(name: spec.name)
            devices.append(device)
            dirtySources.append(try Self.v2DirtySource(device, spec: spec, memory: memory, dirty: dirty, iommu: iommu))
        case .region(let handle):
            let device = MigrationDevice(name: spec.name, region: try handle.region())
            devices.append(device)
            dirtySources.append(try Self.regionDirtySource(device, spec: spec, dirty: dirty, iommu: iommu))
        }
        compatibility.append(spec.compatibility ?? "vfio")
    }
}
