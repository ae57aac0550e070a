import ArgumentParser
internal import CProcess
import Foundation
import Logging
import MigrationEngine
import MigrationTLS
import MigrationWire
import VFIODevice

struct TLSOptions: ParsableArguments {
    @Option(help: "CA certificate (PEM) that signed the peer's certificate.")
    var ca: String = "certs/dev/ca.pem"
    @Option(help: "This host's certificate (PEM).")
    var cert: String?
    @Option(help: "This host's private key (PEM).")
    var key: String?
    @Option(name: .customLong("peer-name"), help: "The name the peer's certificate must carry (SAN DNS or IP).")
    var peerName: String?
    @Option(name: .customLong("allow-peer"), help: "A further acceptable peer name (repeatable).")
    var allowPeer: [String] = []
    @Option(help: "Certificate revocation list (PEM); a revoked peer is refused.")
    var crl: String?

    func configuration(defaultCert: String, defaultPeer: String) -> TLSConfiguration {
        TLSConfiguration(caFile: ca, certificateFile: cert ?? "certs/dev/\(defaultCert).pem",
                         privateKeyFile: key ?? "certs/dev/\(defaultCert)-key.pem",
                         peerName: peerName ?? "\(defaultPeer).vfio-migrate.test",
                         allowedPeerNames: allowPeer, crlFile: crl)
    }
}

struct DeviceOptions: ParsableArguments {
    @Option(name: .customLong("device"), help: ArgumentHelp(
        "A device: NAME=sim:[state=SIZE,seed=N,dirty=PAGES,churn=SIZE,chunk=SIZE,allevery=N,image=PATH], NAME=file:PATH[@OFFSET], NAME=vfio:GROUP/DEVICE; any may end in ,compat=STRING. Repeatable; order matters.",
        valueName: "name=backend"))
    var devices: [String] = []
    @Option(help: "Guest memory: a shared file (memory-backend-file, hugetlbfs).")
    var memory: String?
    @Option(name: .customLong("memory-size"), help: "Guest memory size (e.g. 1G); default: the file's size.")
    var memorySize: String?
    @Option(name: .customLong("page-size"), help: "Guest page size in bytes.")
    var pageSize: Int = 4096
    @Option(help: "Where dirty pages come from: region (the migration region's bitmap query), iommu (the VFIO container's dirty log, vfio: devices), none.")
    var dirty: String = "region"

    func openMemory(create: Bool) throws -> GuestMemory? {
        guard let memory else {
            if memorySize != nil { throw CLIError.config("--memory-size needs --memory PATH") }
            return nil
        }
        let size = try memorySize.map { try parseSize($0, what: "--memory-size") }
        guard pageSize > 0, pageSize & (pageSize - 1) == 0 else { throw CLIError.config("--page-size \(pageSize) is not a power of two") }
        return try GuestMemory(path: memory, size: size, create: create, pageSize: pageSize)
    }

    func open(memory: GuestMemory?) throws -> OpenedDevices {
        guard !devices.isEmpty else { throw CLIError.config("name at least one --device") }
        guard let mode = OpenedDevices.DirtyMode(rawValue: dirty) else {
            throw CLIError.config("--dirty \(dirty): expected region, iommu or none")
        }
        return try OpenedDevices(specs: devices.map(DeviceSpec.init(parsing:)), memory: memory, dirty: mode)
    }
}

struct OutputOptions: ParsableArguments {
    @Flag(help: "Print one JSON event per line on stdout (for orchestrators) instead of the progress display.")
    var json = false
    @Option(name: .customLong("log-level"), help: "Diagnostics on stderr: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "warning"
    @Option(name: .customLong("dump-state"), help: "After success, write each simulated device's state to DIR/NAME.state.")
    var dumpState: String?

    func bootstrapLogging() { Self.bootstrapLogging(level: logLevel) }

    static func bootstrapLogging(level name: String) {
        let level = Logger.Level(rawValue: name) ?? .warning
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

/// SIGINT/SIGTERM → `action` (cancel before commit). A second signal exits at once.
final class InterruptHandler: @unchecked Sendable {
    private var sources: [DispatchSourceSignal] = []
    init(_ action: @escaping @Sendable () -> Void) {
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            var count = 0
            s.setEventHandler {
                count += 1
                if count > 1 { exit(130) }
                action()
            }
            s.resume()
            sources.append(s)
        }
    }
}

/// Process-wide settings every subcommand wants before moving data.
enum ProcessSetup {
    static func apply() {
        ignoreSIGPIPE()
        // Lines on stdout appear when written, in order with stderr's progress,
        // also when an orchestrator reads them through a pipe.
        cprocess_line_buffer_stdout()
        // The pipeline allocates and frees ~1 MiB buffers at a high rate. glibc
        // serves those with mmap/munmap (or trims the heap after each free),
        // so every buffer costs page faults and kernel page clearing — measured
        // at a third of the receiver's CPU. Keep them on the heap and keep the
        // heap: memory stays bounded by the pipeline window all the same.
        mallopt(M_MMAP_THRESHOLD, 64 << 20)
        mallopt(M_TRIM_THRESHOLD, 32 << 20)
        // Buffers are made on one thread and freed on another; with an arena per
        // thread, variable-size compressed outputs fragment every arena and the
        // resident heap creeps up with the length of the run (measured: peak
        // RssAnon 26 → 36 MiB from a 1 to a 4 GiB guest; one arena: 18 → 22).
        // About one allocation per MiB moved, so one arena's lock costs nothing.
        mallopt(M_ARENA_MAX, 1)
    }
}

extension OpenedDevices {
    /// Each device's device_state as read back from its region now (after a failure the
    /// operator sees where the devices were left, not where the engine meant to leave them).
    func readBackStates() -> [(name: String, state: String)] {
        devices.map { d in (d.name, (try? d.readState()).map { "\($0)" } ?? "unreadable") }
    }
}
