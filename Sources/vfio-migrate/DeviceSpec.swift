import CommandLineSupport
import Foundation
import MigrationControl
import MigrationEngine
import VFIODevice
import VFIOSimulator

/// `--device NAME=BACKEND` as typed by the operator.
///   sim:[state=SIZE,seed=N,dirty=PAGES,churn=SIZE,chunk=SIZE,allevery=N,image=PATH]
///   sim:interface=v2[,precopy=0|1,p2p=0|1,dmalog=0|1,precopyend=enomsg|zero,state=…,seed=…,dirty=…,churn=…,chunk=…]
///   file:PATH[@OFFSET][,size=SIZE]     (PATH may be fd:N or fd:NAME, a descriptor from the VMM)
///   vfio:GROUP/DEVICE[,interface=v1|v2]
///   fd:N[,interface=v1|v2]             (an open VFIO device from the VMM; fd:NAME from add-fd)
/// Any form may end with `,compat=STRING` (the opaque compatibility string in HELLO).
struct DeviceSpec: Sendable, CustomStringConvertible {
    enum Backend: Sendable {
        case sim(SimulatedDevice.Configuration)
        case file(path: String, offset: UInt64, size: UInt64?)
        /// `file:fd:N[@OFFSET]` / `file:fd:NAME[@OFFSET]`: a region file the VMM passed open.
        case fileDescriptor(DescriptorReference, name: String, offset: UInt64, size: UInt64?)
        /// `fd:N` / `fd:NAME`: an open VFIO device the VMM passed (its group and container stay the VMM's).
        case vfioDescriptor(DescriptorReference, name: String, interface: VFIODiscovery.InterfaceChoice)
        case vfio(group: String, device: String)
        /// `vfio:GROUP/DEVICE,interface=v1|v2`: one interface forced (plain `vfio:` probes v2 first).
        case vfioForced(group: String, device: String, interface: VFIODiscovery.InterfaceChoice)
        /// A simulated v2 device (DeviceSpecV2.swift); `chunkBytes` per DEVICE_DATA chunk.
        case simV2(SimulatedV2Device.Configuration, chunkBytes: Int)
    }
    var name: String
    var backend: Backend
    var compatibility: String?
    var description: String { "\(name)" }

    /// `checkFiles: false` checks the syntax only (at argument validation, before any
    /// file is opened); a state image's size is then read when the device is opened.
    init(parsing text: String, checkFiles: Bool = true) throws {
        guard let eq = text.firstIndex(of: "=") else {
            throw CLIError.badDevice(text, "expected NAME=BACKEND, e.g. gpu0=sim:state=64M")
        }
        name = String(text[..<eq])
        guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.:".contains($0) }) else {
            throw CLIError.badDevice(text, "device name must be letters, digits, - _ . :")
        }
        let rest = String(text[text.index(after: eq)...])
        guard let colon = rest.firstIndex(of: ":") else {
            throw CLIError.badDevice(text, "backend must be sim:..., file:PATH[@OFFSET], vfio:GROUP/DEVICE or fd:N")
        }
        let kind = String(rest[..<colon])
        var parts = String(rest[rest.index(after: colon)...]).split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        var compat: String?
        parts.removeAll { p in
            if p.hasPrefix("compat=") { compat = String(p.dropFirst(7)); return true }
            return false
        }
        compatibility = compat
        switch kind {
        case "sim" where parts.contains("interface=v2"):
            backend = try DeviceSpec.simV2(parts.filter { $0 != "interface=v2" }, spec: text)
        case "sim": backend = try DeviceSpec.sim(parts.filter { $0 != "interface=v1" }, spec: text, checkFiles: checkFiles)
        case "file": backend = try DeviceSpec.file(parts, spec: text)
        case "vfio": backend = try DeviceSpec.vfio(parts, spec: text)
        case "fd":
            let first = parts.first ?? ""
            guard let reference = try Self.descriptor("fd:" + first, spec: text) else { preconditionFailure("an fd: form") }
            backend = .vfioDescriptor(reference, name: "fd:" + first, interface: try DeviceSpec.vfioInterface(parts.dropFirst(), spec: text))
        default:
            throw CLIError.badDevice(text, "unknown backend \(kind) (sim, file, vfio, fd)")
        }
    }
}

/// One parser per backend: the options after `BACKEND:`, `compat=` already taken out.
extension DeviceSpec {
    /// `sim:[state=SIZE,seed=N,dirty=PAGES,churn=SIZE,chunk=SIZE,allevery=N,image=PATH]`.
    static func sim(_ parts: [String], spec text: String, checkFiles: Bool) throws -> Backend {
        var config = SimulatedDevice.Configuration()
        var stateGiven = false
        var image: String?
        for p in parts where !p.isEmpty {
            let kv = p.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2 else { throw CLIError.badDevice(text, "sim option \(p) is not KEY=VALUE") }
            switch kv[0] {
            case "state": config.stateSize = Int(try parseSize(kv[1], what: "state")); stateGiven = true
            case "image": image = kv[1]
            case "seed": guard let v = UInt64(kv[1]) else { throw CLIError.badDevice(text, "seed must be a number") }; config.seed = v
            case "dirty": guard let v = Int(kv[1]), v >= 0 else { throw CLIError.badDevice(text, "dirty must be a page count") }; config.dirtyPagesPerStep = v
            case "churn": config.stateBytesPerStep = Int(try parseSize(kv[1], what: "churn"))
            case "chunk": config.maxChunkSize = Int(try parseSize(kv[1], what: "chunk"))
            case "allevery": guard let v = Int(kv[1]), v >= 0 else { throw CLIError.badDevice(text, "allevery must be a count") }; config.allEvery = v
            default: throw CLIError.badDevice(text, "unknown sim option \(kv[0]) (state, seed, dirty, churn, chunk, allevery, image, compat)")
            }
        }
        if let image, checkFiles {
            let size = try stateImageSize(image, spec: text)
            if stateGiven, size != config.stateSize {
                throw CLIError.badDevice(text, "image \(image) has \(size) bytes, state=\(config.stateSize)")
            }
            config.stateSize = size
            config.initialStateFile = image
        }
        return .sim(config)
    }

    /// `file:PATH[@OFFSET][,size=SIZE]`, PATH possibly `fd:N` / `fd:NAME`.
    static func file(_ parts: [String], spec text: String) throws -> Backend {
        guard let first = parts.first, !first.isEmpty else { throw CLIError.badDevice(text, "file: needs a path") }
        var path = first
        var offset: UInt64 = 0
        if let at = first.lastIndex(of: "@") {
            path = String(first[..<at])
            offset = try parseSize(String(first[first.index(after: at)...]), what: "offset")
        }
        var size: UInt64?
        for p in parts.dropFirst() where !p.isEmpty {
            if p.hasPrefix("size=") { size = try parseSize(String(p.dropFirst(5)), what: "size") } else {
                throw CLIError.badDevice(text, "unknown file option \(p) (size, compat)")
            }
        }
        switch try Self.descriptor(path, spec: text) {
        case .some(let reference): return .fileDescriptor(reference, name: path, offset: offset, size: size)
        case .none: return .file(path: path, offset: offset, size: size)
        }
    }

    /// `vfio:GROUP/DEVICE[,interface=v1|v2]`.
    static func vfio(_ parts: [String], spec text: String) throws -> Backend {
        let gd = (parts.first ?? "").split(separator: "/", maxSplits: 1).map(String.init)
        guard gd.count == 2, !gd[0].isEmpty, !gd[1].isEmpty else {
            throw CLIError.badDevice(text, "vfio: needs GROUP/DEVICE, e.g. vfio:26/0000:65:00.0")
        }
        let interface = try DeviceSpec.vfioInterface(parts.dropFirst(), spec: text)
        return interface == .auto ? .vfio(group: gd[0], device: gd[1]) : .vfioForced(group: gd[0], device: gd[1], interface: interface)
    }
}

extension DeviceSpec {
    /// `fd:N` or `fd:NAME`; nil for a path.
    static func descriptor(_ path: String, spec: String) throws -> DescriptorReference? {
        do { return try DescriptorReference(parsing: path) } catch { throw CLIError.badDevice(spec, "\(error)") }
    }

    /// The `add-fd` name this device refers to, if any (the CLI then waits for `start`).
    var descriptorName: String? {
        switch backend {
        case .fileDescriptor(.named(let name), _, _, _), .vfioDescriptor(.named(let name), _, _): name
        default: nil
        }
    }
}

/// The size of a state image, checked readable: the simulated device later reads
/// the image straight into its device memory.
private func stateImageSize(_ path: String, spec: String) throws -> Int {
    guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
          let size = (attributes[.size] as? NSNumber)?.intValue else {
        throw CLIError.badDevice(spec, "cannot open image \(path)")
    }
    guard size > 0 else { throw CLIError.badDevice(spec, "image \(path) is empty") }
    guard FileManager.default.isReadableFile(atPath: path) else { throw CLIError.badDevice(spec, "image \(path) is not readable") }
    return size
}

/// `4096`, `64K`, `256M`, `1G` (binary units) inside a `--device` spec, where
/// the error names the spec's field (`what`).
func parseSize(_ text: String, what: String) throws -> UInt64 {
    guard let size = ByteCount(parsing: text) else { throw CLIError.badSize(what, text) }
    return size.bytes
}

enum CLIError: Error, CustomStringConvertible {
    case badDevice(String, String)
    case badSize(String, String)
    case config(String)
    var description: String {
        switch self {
        case .badDevice(let t, let why): return "--device \(t): \(why)"
        case .badSize(let what, let t): return "\(what): \(t) is not a size (e.g. 4096, 64K, 256M, 1G)"
        case .config(let s): return s
        }
    }
}
