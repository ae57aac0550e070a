import ArgumentParser
import CommandLineSupport
import Foundation
import MigrationControl
import Logging
import MigrationEngine
import MigrationTLS
import MigrationWire
import VFIODevice
import VFIOSimulator

/// Both ends in one process over loopback TLS with the development
/// certificates: two simulated devices with a running workload and a guest
/// memory of realistic content; verifies at the end that the destination
/// equals the source.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run a whole live migration on loopback with simulated devices (no hardware needed).")
    @Option(name: .customLong("memory-size"), help: "Guest memory size (at least 1M, a multiple of 4K).")
    var memorySize: ByteCount = ByteCount(bytes: 256 << 20)
    @Option(name: .customLong("state-size"), help: "Device state per simulated device (at least 4K, at most 4G).")
    var stateSize: ByteCount = ByteCount(bytes: 32 << 20)
    @Option(help: "Number of simulated devices (1...16).")
    var devices: Int = 2
    @Option(help: "The simulated devices' kernel interface: v1 (the seed's migration region, dirty pages by region query) or v2 (Linux 5.18+ state machine and data_fd, dirty pages by device DMA logging).")
    var interface: DemoInterface = .v1
    @Option(name: .customLong("workload-ms"), help: "Workload step interval in ms (state churn and DMA into guest memory).")
    var workloadMs: Double = 1
    @Option(name: .customLong("certs"), help: "Directory with the development certificates (ca.pem, source*.pem, destination*.pem).")
    var certs: String = "certs/dev"
    @OptionGroup var tuning: SenderTuning
    @Flag(help: "One JSON event per line instead of the progress display.")
    var json = false
    @Option(name: .customLong("log-level"), help: "Diagnostics on stderr.")
    var logLevel: Logger.Level = .warning

    func validate() throws {
        guard memorySize.bytes >= 1 << 20, memorySize.bytes % 4096 == 0 else {
            throw ValidationError("--memory-size \(memorySize.bytes): expected at least 1M and a multiple of 4K")
        }
        guard (4096...(4 << 30)).contains(stateSize.bytes) else {
            throw ValidationError("--state-size \(stateSize.bytes): expected 4K...4G")
        }
        try ArgumentCheck.count(devices, "--devices", in: 1...16)
        try ArgumentCheck.milliseconds(workloadMs, "--workload-ms", allowZero: true)
    }

    func run() throws {
        ProcessSetup.apply()
        OutputOptions.bootstrapLogging(level: logLevel)
        let clock = EventClock()
        let out = EventPrinter(mode: json ? .json : .human, side: "source", clock: clock)
        let dst = EventPrinter(mode: json ? .json : .human, side: "destination", quiet: true, clock: clock)
        do {
            let (serverContext, clientContext) = try tlsContexts()
            try migrateAndVerify(serverContext: serverContext, clientContext: clientContext, out: out, dst: dst)
        } catch let e as MigrationError {
            throw failureExit(for: e, printer: out, side: "source")
        } catch let e as CLIError {
            FileHandle.standardError.write(Data("vfio-migrate demo: \(e)\n".utf8))
            throw ExitCode(1)
        } catch {
            throw failureExit(for: error, printer: out, side: "source")
        }
    }

    private func say(_ line: String) { if !json { print(line) } }

    /// Both ends' TLS contexts from the development set in `certs` (loopback only).
    private func tlsContexts() throws -> (server: TLSContext, client: TLSContext) {
        for f in ["ca.pem", "source.pem", "source-key.pem", "destination.pem", "destination-key.pem"] {
            guard FileManager.default.fileExists(atPath: "\(certs)/\(f)") else {
                throw CLIError.config("\(certs)/\(f) is missing: run the demo from the repository root, pass --certs DIR, or make a set with certs/make-dev-certs.sh")
            }
        }
        let srcTLS = TLSConfiguration(caFile: "\(certs)/ca.pem", certificateFile: "\(certs)/source.pem", privateKeyFile: "\(certs)/source-key.pem", peerName: "destination.vfio-migrate.test", allowDevelopmentCertificates: true)
        let dstTLS = TLSConfiguration(caFile: "\(certs)/ca.pem", certificateFile: "\(certs)/destination.pem", privateKeyFile: "\(certs)/destination-key.pem", peerName: "source.vfio-migrate.test", allowDevelopmentCertificates: true)
        let serverContext = try TLSContext(configuration: dstTLS, role: .server)
        let clientContext = try TLSContext(configuration: srcTLS, role: .client)
        warnAboutCertificates(clientContext, command: "demo")
        return (serverContext, clientContext)
    }

    /// Fills the source guest, migrates it and the simulated devices in process under a
    /// workload, and checks that every device state and guest page arrived identical.
    private func migrateAndVerify(serverContext: TLSContext, clientContext: TLSContext, out: EventPrinter, dst: EventPrinter) throws {
        let memBytes = memorySize.bytes
        let state = Int(stateSize.bytes)
        say("vfio-migrate demo: \(devices) simulated device(s) with \(formatBytes(UInt64(state))) of state each, \(formatBytes(memBytes)) of guest memory, compression \(tuning.compress)")
        let srcMemory = try GuestMemory(anonymousNamed: "demo-source", size: memBytes, pageSize: 4096)
        let dstMemory = try GuestMemory(anonymousNamed: "demo-destination", size: memBytes, pageSize: 4096)
        let fillStart = ContinuousClock.now
        try GuestCorpus.fill(srcMemory, seed: 42)
        say(String(format: "filled source guest memory (25%% zero, 50%% binary, 25%% random pages) in %.2f s", (ContinuousClock.now - fillStart).seconds))

        let specs = (0..<devices).map { i in "dev\(i)=sim:\(interface.specPrefix)state=\(state),seed=\(i + 1),dirty=4,churn=1K,chunk=1M" }
        let srcDevices = try OpenedDevices(specs: specs.map { try DeviceSpec(parsing: $0) }, memory: srcMemory, dirty: interface.dirtyMode)
        let dstDevices = try OpenedDevices(specs: specs.map { try DeviceSpec(parsing: $0) }, memory: dstMemory, dirty: interface.dirtyMode)

        let receiver = Receiver(devices: dstDevices.destinationDevices, memory: dstMemory, options: ReceiverOptions(), events: dst.handle)
        let workload = SimWorkload(devices: srcDevices.simulated.map(\.device), v2: srcDevices.simulatedV2.map(\.device), intervalMs: workloadMs)
        let sender = Sender(devices: srcDevices.sourceDevices, memory: srcMemory, options: tuning.options(), events: out.handle)
        let interrupts = InterruptHandler { sender.cancel() }
        defer { withExtendedLifetime(interrupts) {} }
        let outcome = try InProcessMigration.run(sender: sender, receiver: receiver, serverContext: serverContext,
                                                 clientContext: clientContext, connected: { out.handle(.connected(peer: $0)) })
        workload.stop()
        _ = try outcome.source.get()
        _ = try outcome.destination.get()

        var mismatches = DemoVerification.deviceMismatches(source: srcDevices, destination: dstDevices)
        if let page = try DemoVerification.firstDifference(srcMemory, dstMemory) { mismatches.append("guest page \(page) differs") }
        guard mismatches.isEmpty else { throw CLIError.config("VERIFICATION FAILED: " + mismatches.joined(separator: "; ")) }
        say("verified: destination device state and guest memory are byte-identical to the source; devices run on the destination only")
    }
}

/// Checks the demo's result: the first guest page that differs between source and destination.
enum DemoVerification {
    static func firstDifference(_ a: GuestMemory, _ b: GuestMemory) throws -> UInt64? {
        guard a.pageCount == b.pageCount else { return 0 }
        var pfn: UInt64 = 0
        while pfn < a.pageCount {
            let n = Int(min(256, a.pageCount - pfn))
            let x = try a.readPages(startPFN: pfn, count: n), y = try b.readPages(startPFN: pfn, count: n)
            if x != y {
                for p in 0..<n where x[(p * a.pageSize)..<((p + 1) * a.pageSize)] != y[(p * a.pageSize)..<((p + 1) * a.pageSize)] {
                    return pfn + UInt64(p)
                }
            }
            pfn += UInt64(n)
        }
        return nil
    }
}

/// `demo --interface`: which simulated vendor driver the devices are.
enum DemoInterface: String, CaseIterable, ExpressibleByArgument {
    case v1, v2
    var specPrefix: String { self == .v2 ? "interface=v2," : "" }
    var dirtyMode: OpenedDevices.DirtyMode { self == .v2 ? .deviceLog : .region }
}

extension DemoVerification {
    /// Device state differs, a destination device does not run, or a source device still does.
    static func deviceMismatches(source: OpenedDevices, destination: OpenedDevices) -> [String] {
        var found: [String] = []
        for (s, d) in zip(source.simulated, destination.simulated) where s.device.stateSnapshot() != d.device.stateSnapshot() {
            found.append("device \(s.name) state differs")
        }
        for (s, d) in zip(source.simulatedV2, destination.simulatedV2) where s.device.stateSnapshot() != d.device.stateSnapshot() {
            found.append("device \(s.name) state differs")
        }
        let destinationStates = destination.simulated.map { ($0.name, $0.device.currentState == .running) }
            + destination.simulatedV2.map { ($0.name, $0.device.currentState == .running) }
        for (name, runs) in destinationStates where !runs { found.append("device \(name) is not RUNNING on the destination") }
        let sourceStates = source.simulated.map { ($0.name, $0.device.currentState.contains(.running)) }
            + source.simulatedV2.map { ($0.name, $0.device.currentState == .running) }
        for (name, runs) in sourceStates where runs { found.append("device \(name) still runs on the source") }
        return found
    }
}
