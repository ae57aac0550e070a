import ArgumentParser
import CommandLineSupport
import Foundation
import MigrationControl
import Logging
import MigrationEngine
import MigrationTLS
import MigrationWire
import SyncPrimitives
import VFIODevice

struct TLSOptions: ParsableArguments {
    @Option(help: "CA certificate (PEM) that signed the peer's certificate. Required.")
    var ca: String?
    @Option(help: "This host's certificate (PEM). Required.")
    var cert: String?
    @Option(help: "This host's private key (PEM, mode 0600). Required.")
    var key: String?
    @Option(name: .customLong("peer-name"), help: "The name the peer's certificate must carry (SAN DNS or IP). Required.")
    var peerName: String?
    @Option(name: .customLong("allow-peer"), help: "A further acceptable peer name (repeatable).")
    var allowPeer: [String] = []
    @Option(help: "Certificate revocation list (PEM); a revoked peer is refused.")
    var crl: String?
    @Flag(name: .customLong("allow-dev-certs"), help: "Permit the development certificates of certs/dev (their private keys are public): loopback and UNIX-socket addresses only, for tests and demos.")
    var allowDevCerts = false

    /// No defaults: a forgotten option must never fall back to keys anyone can download.
    func validate() throws {
        let missing = [("--ca", ca), ("--cert", cert), ("--key", key), ("--peer-name", peerName)]
            .filter { $0.1 == nil }.map(\.0)
        guard missing.isEmpty else {
            throw ValidationError("missing \(missing.joined(separator: ", ")): send and receive have no certificate defaults. Make this host's certificate as certs/README.md describes (for a loopback test, the development set in certs/dev with --allow-dev-certs).")
        }
    }

    /// Call after `validate()`, which guarantees the required files are named.
    func configuration() -> TLSConfiguration {
        TLSConfiguration(caFile: ca ?? "", certificateFile: cert ?? "", privateKeyFile: key ?? "",
                         peerName: peerName ?? "", allowedPeerNames: allowPeer, crlFile: crl,
                         allowDevelopmentCertificates: allowDevCerts)
    }
}

/// Warnings about this host's own certificates, printed once at start on stderr
/// (the hello event repeats them with the peer's).
func warnAboutCertificates(_ context: TLSContext, command: String) {
    let own = SessionSecurity(developmentCertificates: context.usesDevelopmentCertificates,
                              ownCertificateNotAfter: context.ownCertificateNotAfter)
    for warning in own.warnings() {
        FileHandle.standardError.write(Data("vfio-migrate \(command): warning: \(warning)\n".utf8))
    }
}

struct DeviceOptions: ParsableArguments {
    @Option(name: .customLong("device"), help: ArgumentHelp(
        "A device: NAME=sim:[state=SIZE,seed=N,dirty=PAGES,churn=SIZE,chunk=SIZE,allevery=N,image=PATH], NAME=file:PATH[@OFFSET] (PATH may be fd:N, a region file the VMM passed open read-write), NAME=vfio:GROUP/DEVICE, NAME=fd:N[,interface=v1|v2] (an open VFIO device the VMM passed); fd:NAME instead of fd:N: passed with add-fd on --control. Any may end in ,compat=STRING. Repeatable; order matters.",
        valueName: "name=backend"))
    var devices: [String] = []
    @Option(help: "Guest memory: a shared file (memory-backend-file, hugetlbfs), or fd:N, a memfd/hugetlbfs/shared-file descriptor the VMM passed open read-write (fd:NAME: passed with add-fd on --control; mapped MAP_SHARED; refused before anything starts if closed, read-only, not a regular file or not --memory-size bytes).")
    var memory: String?
    @Option(help: "--dirty iommu with fd: devices: fd:N or fd:NAME, the VFIO container (/dev/vfio/vfio) the VMM opened and set up.")
    var iommu: String?
    @Option(name: .customLong("memory-size"), help: "Guest memory size (e.g. 1G); default: the file's size.")
    var memorySize: ByteCount?
    @Option(name: .customLong("page-size"), help: "Guest page size in bytes (a power of two, 4096 to 1G).")
    var pageSize: Int = 4096
    @Option(help: "Where dirty pages come from: region (the migration region's bitmap query), iommu (the VFIO container's dirty log, vfio: devices), device-log (a v2 device's DMA logging), vmm (only the guest's own dirty pages, from the VMM on --control: dirty-sync each round), none.")
    var dirty: OpenedDevices.DirtyMode = .region
    /// A separate flag because `--dirty` picks one device source; the guest's
    /// pages come from the VMM whatever the devices use, and the union is re-sent.
    @Flag(name: .customLong("guest-dirty-log"), help: "send: also re-send the pages the guest's vCPUs dirtied, from the VMM on --control (dirty-log-setup before the migration, dirty-sync each round); combinable with any --dirty. --dirty vmm implies it.")
    var guestDirtyLog = false

    /// Whether the source asks the VMM for the guest's dirty pages.
    var wantsGuestDirtyLog: Bool { guestDirtyLog || dirty == .vmm }

    func validate() throws {
        guard !devices.isEmpty else { throw ValidationError("name at least one --device NAME=BACKEND") }
        for text in devices {
            do { _ = try DeviceSpec(parsing: text, checkFiles: false) } catch { throw ValidationError("\(error)") }
        }
        guard (4096...(1 << 30)).contains(pageSize), pageSize & (pageSize - 1) == 0 else {
            throw ValidationError("--page-size \(pageSize): expected a power of two from 4096 to 1G")
        }
        if memorySize != nil && memory == nil { throw ValidationError("--memory-size needs --memory PATH") }
        if memorySize?.bytes == 0 { throw ValidationError("--memory-size 0: expected a size above 0") }
        if let memory { _ = try Self.memoryDescriptor(memory) }
        if let iommu {
            _ = try IOMMUOption(parsing: iommu)
            guard dirty == .iommu else { throw ValidationError("--iommu \(iommu) applies to --dirty iommu only") }
        }
    }

    /// `--memory fd:N|fd:NAME`; nil for a path.
    static func memoryDescriptor(_ text: String) throws -> DescriptorReference? {
        do { return try DescriptorReference(parsing: text) } catch { throw ValidationError("--memory \(text): \(error)") }
    }

    func openMemory(create: Bool, descriptors: HandedDescriptors) throws -> GuestMemory? {
        guard let memory else { return nil }
        if let reference = try Self.memoryDescriptor(memory) {
            let fd = try descriptors.resolve(reference, option: "--memory \(memory)")
            // The VMM sized and owns its memory: creating or extending it is not ours to do.
            if create { throw ValidationError("--create-memory does not apply to --memory \(memory) (the VMM's own memory)") }
            return try GuestMemory(descriptor: fd, name: memory, size: memorySize?.bytes, pageSize: pageSize)
        }
        return try GuestMemory(path: memory, size: memorySize?.bytes, create: create, pageSize: pageSize)
    }

    func open(memory: GuestMemory?, descriptors: HandedDescriptors) throws -> OpenedDevices {
        let container = try iommu.map { try IOMMUOption(parsing: $0).open(descriptors) }
        return try OpenedDevices(specs: devices.map { try DeviceSpec(parsing: $0) }, memory: memory, dirty: dirty,
                                 descriptors: descriptors, container: container)
    }
}

struct OutputOptions: ParsableArguments {
    @Flag(help: "Print one JSON event per line on stdout (for orchestrators) instead of the progress display.")
    var json = false
    @Option(name: .customLong("log-level"), help: "Diagnostics on stderr.")
    var logLevel: Logger.Level = .warning
    @Option(name: .customLong("dump-state"), help: "After success, write each simulated device's state to DIR/NAME.state.")
    var dumpState: String?

    func bootstrapLogging() { Self.bootstrapLogging(level: logLevel) }

    static func bootstrapLogging(level: Logger.Level) {
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
    }
}

/// Exits with the code of the failure's disposition, after printing it.
func failureExit(for error: any Error, printer: EventPrinter, side: String, devices: OpenedDevices? = nil) -> ExitCode {
    if let m = error as? MigrationError {
        printer.failed(m, deviceStates: devices?.readBackStates() ?? [])
        return ExitCode(m.disposition.rawValue)
    }
    let m = MigrationError(phase: .connect, failure: .configuration("\(error)"), disposition: .notStarted)
    printer.failed(m)
    return ExitCode(FailureDisposition.notStarted.rawValue)
}

/// SIGINT/SIGTERM → `action` (cancel before commit). A second signal, of either
/// kind, exits at once.
final class InterruptHandler: @unchecked Sendable {  // dispatch sources, immutable after init
    private let sources: [any DispatchSourceSignal]

    init(_ action: @escaping @Sendable () -> Void) {
        let received = LockedValue(0)
        sources = [SIGINT, SIGTERM].map { sig in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                if received.withLock({ count in count += 1; return count }) > 1 { exit(130) }
                action()
            }
            source.resume()
            return source
        }
    }
}

extension OpenedDevices {
    /// Each device's device_state as read back from its region now (after a failure the
    /// operator sees where the devices were left, not where the engine meant to leave them).
    func readBackStates() -> [(name: String, state: String)] {
        devices.map { d in (d.name, (try? d.readState()).map { "\($0)" } ?? "unreadable") }
    }
}
