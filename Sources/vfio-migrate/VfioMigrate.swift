import ArgumentParser
import CommandLineSupport
import Foundation
import MigrationControl
import MigrationEngine
import MigrationTLS
import MigrationWire
import VFIODevice

@main
struct VfioMigrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vfio-migrate",
        abstract: "Live-migrate VFIO devices (Linux v2 migration interface or the v1 migration region) over mutually authenticated TLS 1.3.",
        discussion: """
        Exit codes: 0 success; 1 nothing started (configuration, certificates, devices); \
        2 failed before COMMIT and rolled back (the source runs the devices again, the destination never ran them); \
        3 failed after COMMIT (an operator must check where the VM runs); \
        4 failed before COMMIT and a source device refused to run again (operator must act); \
        5 failed after COMMIT and the destination reported it did not resume (the VM runs on neither host); 64 usage error.
        """,
        version: BuildInfo.versionLine,
        subcommands: [Demo.self, Send.self, Receive.self],
        defaultSubcommand: Demo.self)

    /// `--config FILE` is applied before ArgumentParser parses (see ConfigExpansion).
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        let expanded: [String]
        do { expanded = try ConfigExpansion.expand(arguments, commands: ["send": Send.self, "receive": Receive.self]) } catch {
            FileHandle.standardError.write(Data("Error: \(error)\n".utf8))
            Foundation.exit(ExitCode.validationFailure.rawValue)
        }
        main(expanded)
    }
}

struct SenderTuning: ParsableArguments {
    @Option(help: "Compression: none, zlib:1..9, zstd:N (-50..19, not 0; deflate if the destination lacks zstd), auto (raw or a codec level per batch, from the link's and the codecs' measured rates and the host's idle cores).")
    var compress: CompressionPolicy = .auto
    @Option(name: .customLong("downtime-ms"), help: "Switch over when the estimated downtime is below this.")
    var downtimeMs: Double = 300
    @Option(name: .customLong("max-iterations"), help: "Switch over after this many pre-copy iterations at most (1 or more).")
    var maxIterations: Int = 30
    @Option(help: "Pre-copy time budget in seconds (see --on-timeout).")
    var timeout: Double?
    @Option(name: .customLong("on-timeout"), help: "When --timeout fires: rollback (cancel, the source keeps running) or switchover (stop and copy now).")
    var onTimeout: TimeoutAction = .rollback
    @Option(name: .customLong("max-stalled-iterations"), help: "Pre-copy iterations in a row without the remaining set shrinking by 10 % before it counts as stalled (1 or more; see --on-stall).")
    var maxStalledIterations: Int = 3
    @Option(name: .customLong("on-stall"), help: "When pre-copy stalls or the dirty rate outruns the link: switchover (stop and copy now), rollback (cancel, the source keeps running, exit 2) or throttle (slow the guest through the VMM; without a controller, switchover).")
    var onStall: StallPolicy = .switchover
    @Option(help: "Bandwidth limit in bytes per second on the wire (e.g. 100M).")
    var bandwidth: ByteCount?
    @Option(help: "Compression worker threads (default: all cores).")
    var workers: Int?
    @Option(name: .customLong("peer-timeout"), help: "Seconds of silence after which the peer is considered gone.")
    var peerTimeout: Double = 30
    @Option(name: .customLong("ready-timeout"), help: "Seconds the destination may take after COMPLETE to verify and answer READY.")
    var readyTimeout: Double = 120
    @Option(name: .customLong("reconnect-timeout"), help: "Seconds a broken connection may take to come back before the migration fails (the session resumes where it stood); 0: never resume (protocol version 1).")
    var reconnectTimeout: Double = 30
    @Option(name: .customLong("resume-window"), help: "Sent device data kept until the destination acknowledges it, for a resume (at least 17 MiB + 24 bytes, e.g. 18M; the source stops reading devices while it is full).")
    var resumeWindow: ByteCount = ByteCount(bytes: 64 << 20)
    @Option(help: "TLS connections for one session (1-64; default by the cores: 1 up to 4 cores, then one per 2 cores, up to 16): pages spread over them by PFN, device data on the first. More than 1 needs --reconnect-timeout > 0 and a destination with --max-streams > 1 (protocol version 3); such a session resumes after a lost connection like a one-stream session (docs/PROTOCOL.md §14.5).")
    var streams: Int?
    @Option(name: .customLong("device-digest"), help: "DEVICE_END's digest of each device's state: xxh3 (default: XXH3-128 when the destination takes it, protocol version 5; SHA-256 otherwise) or sha256 (always SHA-256: version 5 is not offered; version 6, page copies, still is, since it allows SHA-256).")
    var deviceDigest: DeviceDigestAlgorithm = .xxh3

    @Flag(name: .customLong("no-page-copies"), help: "Send every page with its bytes: no copy segments naming a page the destination already holds (protocol version 6; on by default, up to 10 MiB for the table of sent pages).")
    var noPageCopies = false

    func validate() throws {
        try ArgumentCheck.milliseconds(downtimeMs, "--downtime-ms")
        try ArgumentCheck.count(maxIterations, "--max-iterations", in: 1...1_000_000)
        try ArgumentCheck.count(maxStalledIterations, "--max-stalled-iterations", in: 1...1_000_000)
        try ArgumentCheck.seconds(timeout, "--timeout")
        if let bandwidth, bandwidth.bytes == 0 { throw ValidationError("--bandwidth 0: expected a rate above 0 (omit it for no limit)") }
        try ArgumentCheck.count(workers, "--workers", in: 1...1024)
        try ArgumentCheck.seconds(peerTimeout, "--peer-timeout")
        try ArgumentCheck.seconds(readyTimeout, "--ready-timeout")
        try ArgumentCheck.seconds(reconnectTimeout, "--reconnect-timeout", allowZero: true)
        try ArgumentCheck.count(streams, "--streams", in: 1...StreamCount.limit)
        let minimum = SenderOptions().minimumResumeWindowBytes
        if resumeWindow.bytes < UInt64(minimum) {
            throw ValidationError("--resume-window \(resumeWindow): below the minimum of \(minimum) bytes (the largest frame, 16 MiB and its header, plus the 1 MiB acknowledgement interval); a smaller window might never make room again (18M will do)")
        }
    }

    /// Call after `validate()`.
    func options() -> SenderOptions {
        var o = SenderOptions()
        o.compression = compress
        o.downtimeTargetMs = downtimeMs
        o.maxIterations = maxIterations
        o.timeoutSeconds = timeout
        o.onTimeout = onTimeout
        o.maxStalledIterations = maxStalledIterations
        o.onStall = onStall
        o.bandwidthBytesPerSecond = bandwidth?.bytes
        if let workers { o.workers = workers }
        o.peerTimeoutSeconds = peerTimeout
        o.readyTimeoutSeconds = readyTimeout
        o.reconnectTimeoutSeconds = reconnectTimeout
        o.resumeWindowBytes = Int(clamping: resumeWindow.bytes)
        o.streams = streams ?? StreamCount.defaultStreams
        o.deviceDigest = deviceDigest
        o.pageCopies = !noPageCopies
        return o
    }
}

struct Send: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Source host: migrate the devices to a listening receiver.")
    @Option(help: "Receiver endpoint: HOST:PORT, [IPV6]:PORT or unix:PATH.")
    var connect: String
    @Option(name: .customLong("connect-timeout"), help: "Seconds for TCP connect plus TLS handshake.")
    var connectTimeout: Double = 10
    @Option(name: .customLong("workload-ms"), help: "Simulated devices: run their workload every N ms (0: idle).")
    var workloadMs: Double = 1
    @OptionGroup var tls: TLSOptions

    func validate() throws {
        try ArgumentCheck.seconds(connectTimeout, "--connect-timeout")
        try ArgumentCheck.milliseconds(workloadMs, "--workload-ms", allowZero: true)
        if devices.wantsGuestDirtyLog, controlOptions.control == nil {
            throw ValidationError("\(devices.dirty == .vmm ? "--dirty vmm" : "--guest-dirty-log") needs --control (the VMM reports the guest's dirty pages on the control socket)")
        }
        try controlOptions.validate(descriptorNames: devices.descriptorNames)
    }
    @OptionGroup var devices: DeviceOptions
    @OptionGroup var tuning: SenderTuning
    @OptionGroup var output: OutputOptions
    @OptionGroup var controlOptions: ControlOptions
    @OptionGroup var config: ConfigOption

    func run() throws {
        output.bootstrapLogging()
        ProcessSetup.apply()
        let clock = EventClock()
        let printer = EventPrinter(mode: output.json ? .json : .human, side: "source", clock: clock)
        let control = try controlOptions.open(role: .source, printer: printer, clock: clock, devices: devices)
        defer { control?.close() }
        let sender: Sender
        let opened: OpenedDevices
        let stream: TLSStream
        let reconnect: Reconnect
        do {
            var options = tuning.options()
            if let control, options.onStall == .throttle { options.guestThrottle = control.guestThrottle }
            options.guestControl = control?.guestControl
            if devices.wantsGuestDirtyLog { options.guestDirtyLog = control?.guestDirtyLog }
            var tlsConfiguration = tls.configuration()
            tlsConfiguration.applicationProtocols = options.applicationProtocols
            let context = try TLSContext(configuration: tlsConfiguration, role: .client)
            warnAboutCertificates(context, command: "send")
            try control?.awaitStart(timeoutSeconds: controlOptions.startTimeout)
            let handed = control?.descriptors ?? HandedDescriptors(table: nil)
            let memory = try devices.openMemory(create: false, descriptors: handed)
            opened = try devices.open(memory: memory, descriptors: handed)
            sender = Sender(devices: opened.sourceDevices, memory: memory, options: options,
                            events: { event in control?.observe(event); printer.handle(event) })
            control?.target.attach(sender: sender) { [sender] in sender.cancel() }
            let endpoint = try Endpoint(parsing: connect)
            reconnect = { [connectTimeout] () throws(TLSError) -> TLSStream in
                try TLSConnector.connect(to: endpoint, context: context, timeoutSeconds: connectTimeout)
            }
            do throws(TLSError) {
                stream = try TLSConnector.connect(to: endpoint, context: context, timeoutSeconds: connectTimeout)
            } catch {
                // Not a configuration problem: name the step that failed and the TLS cause.
                throw MigrationError(phase: error.isConnectStep ? .connect : .handshake, failure: .tls(error), disposition: .notStarted)
            }
            printer.handle(.connected(peer: "\(endpoint) (\(stream.peerName))"))
        } catch {
            throw failureExit(for: error, printer: printer, side: "source")
        }
        let workload = SimWorkload(devices: opened.simulated.map(\.device), v2: opened.simulatedV2.map(\.device), intervalMs: workloadMs)
        let interrupts = InterruptHandler { sender.cancel() }
        defer { withExtendedLifetime(interrupts) {} }
        do {
            _ = try sender.run(stream: stream, reconnect: reconnect)
            workload.stop()
            if let dir = output.dumpState { try opened.dumpState(to: dir) }
        } catch {
            workload.stop()
            throw failureExit(for: error, printer: printer, side: "source", devices: opened)
        }
    }
}

struct Receive: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Destination host: accept one authenticated source and resume its devices on COMMIT.")
    /// `--listen systemd`: the socket a service manager passed (socket activation).
    static let systemdListen = "systemd"
    @Option(help: "Listen endpoint: HOST:PORT, [IPV6]:PORT or unix:PATH; or systemd: the listening socket systemd passes (LISTEN_FDS, LISTEN_PID).")
    var listen: String
    @Option(name: .customLong("accept-timeout"), help: "Give up if no authenticated source arrives within this many seconds; with --keep-listening the wait starts again after each session.")
    var acceptTimeout: Double?
    @Flag(name: .customLong("create-memory"), help: "Create (or extend) the guest-memory file to --memory-size.")
    var createMemory = false
    @Option(help: "Allocate guest memory before listening: auto (when it is RAM: tmpfs, memfd, hugetlbfs; not for a file on disk), always, never.")
    var populate: PopulatePolicy = .auto
    @Flag(name: .customLong("keep-listening"), help: "After a failed session, wait for the next source instead of exiting.")
    var keepListening = false
    @Option(name: .customLong("peer-timeout"), help: "Seconds of silence after which the source is considered gone.")
    var peerTimeout: Double = 30
    @Option(help: "Decompression worker threads (default: all cores).")
    var workers: Int?
    @Flag(name: .customLong("no-zstd"), help: "Do not offer zstd in HELLO: for sources built before zstd, which refuse a HELLO that lists it (sources then deflate).")
    var noZstd = false
    @Option(name: .customLong("port-file"), help: "Write the bound port here once listening (for scripts using port 0).")
    var portFile: String?
    @Option(name: .customLong("reconnect-timeout"), help: "Seconds a session whose connection broke waits for its source to come back (resuming where it stood) before it fails; 0: never resume (protocol version 1).")
    var reconnectTimeout: Double = 30
    @Option(name: .customLong("max-streams"), help: "Most TLS connections a source may open for one session (1-64; 1: one, as before version 3). Extra streams arrive on the listening socket.")
    var maxStreams: Int = StreamCount.defaultMaxStreams
    @Option(name: .customLong("max-zstd-lanes"), help: "Most zstd lanes a source may use in one session, over all its streams (0-16, default 4; protocol version 4): one zstd stream per source compressing thread, each decoded here with a window of up to 16 MiB. 0: no lanes (version 3 or 2).")
    var maxZstdLanes: Int = ReceiverOptions().maxZstdLanes
    @Option(name: .customLong("device-digest"), help: "DEVICE_END digests this side verifies: xxh3 (default: XXH3-128 when the source sends it, protocol version 5; SHA-256 from older sources) or sha256 (SHA-256 only: version 5 is not selected; version 6, page copies, still is, since it allows SHA-256).")
    var deviceDigest: DeviceDigestAlgorithm = .xxh3

    @Flag(name: .customLong("no-page-copies"), help: "Do not take copy segments (protocol version 6): every page arrives with its bytes.")
    var noPageCopies = false

    func validate() throws {
        try ArgumentCheck.seconds(acceptTimeout, "--accept-timeout")
        try ArgumentCheck.count(maxStreams, "--max-streams", in: 1...StreamCount.limit)
        try ArgumentCheck.count(maxZstdLanes, "--max-zstd-lanes", in: 0...16)
        try ArgumentCheck.seconds(peerTimeout, "--peer-timeout")
        try ArgumentCheck.count(workers, "--workers", in: 1...1024)
        try ArgumentCheck.seconds(reconnectTimeout, "--reconnect-timeout", allowZero: true)
        try controlOptions.validate(descriptorNames: devices.descriptorNames)
    }
    @OptionGroup var tls: TLSOptions
    @OptionGroup var devices: DeviceOptions
    @OptionGroup var output: OutputOptions
    @OptionGroup var controlOptions: ControlOptions
    @OptionGroup var config: ConfigOption

    /// What a started receiver holds while it waits for sources.
    struct Started {
        let listener: TLSListener
        let receiver: Receiver
        let opened: OpenedDevices
    }

    func run() throws {
        output.bootstrapLogging()
        ProcessSetup.apply()
        let clock = EventClock()
        let printer = EventPrinter(mode: output.json ? .json : .human, side: "destination", clock: clock)
        let notifier = SystemdNotifier()
        let control = try controlOptions.open(role: .destination, printer: printer, clock: clock, devices: devices)
        defer { control?.close() }
        let started: Started
        do {
            started = try start(control: control,
                                events: { event in control?.observe(event); printer.handle(event); notifier?.report(event) })
            let (receiver, listener) = (started.receiver, started.listener)
            control?.target.attach(sender: nil) { receiver.cancel(); listener.close() }
            printer.handle(.phase(.connect))
            notifier?.ready(listeningOn: started.listener.boundEndpoint)
        } catch {
            throw failureExit(for: error, printer: printer, side: "destination")
        }
        let (receiver, listener) = (started.receiver, started.listener)
        let interrupts = InterruptHandler { receiver.cancel(); listener.close() }
        defer { withExtendedLifetime(interrupts) {} }
        try serve(started, printer: printer, notifier: notifier)
    }

    /// Certificates, guest memory (populated before listening), devices, then the listener.
    /// With `--await-start`, nothing is opened before the VMM's `start`.
    private func start(control: ControlSession?, events: @escaping EventSink) throws -> Started {
        var options = ReceiverOptions()
        options.reconnectTimeoutSeconds = reconnectTimeout
        options.maxStreams = maxStreams
        options.maxZstdLanes = maxZstdLanes
        options.deviceDigest = deviceDigest
        options.pageCopies = !noPageCopies
        // Before the ALPN offer: without zstd this side speaks no version 4 (§15.1).
        if noZstd { options.encodings = [.raw, .deflate] }
        var tlsConfiguration = tls.configuration()
        tlsConfiguration.applicationProtocols = options.applicationProtocols
        let context = try TLSContext(configuration: tlsConfiguration, role: .server)
        warnAboutCertificates(context, command: "receive")
        try control?.awaitStart(timeoutSeconds: controlOptions.startTimeout)
        let handed = control?.descriptors ?? HandedDescriptors(table: nil)
        let memory = try devices.openMemory(create: createMemory, descriptors: handed)
        if let memory, populate.applies(to: memory.backing) { try memory.populate() }
        let opened = try devices.open(memory: memory, descriptors: handed)
        for sim in opened.simulated { sim.device.stageIncoming() }
        options.peerTimeoutSeconds = peerTimeout
        options.guestControl = control?.guestControl
        if let workers { options.workers = workers }
        let receiver = Receiver(devices: opened.destinationDevices, memory: memory, options: options, events: events)
        let listener = try makeListener(context: context)
        if let portFile, case .tcp(_, let port) = listener.boundEndpoint {
            try "\(port)\n".write(toFile: portFile, atomically: true, encoding: .utf8)
        }
        return Started(listener: listener, receiver: receiver, opened: opened)
    }

    private func makeListener(context: TLSContext) throws -> TLSListener {
        guard listen == Self.systemdListen else {
            return try TLSListener(endpoint: try Endpoint(parsing: listen), context: context)
        }
        return try TLSListener(inheritedDescriptor: try SystemdActivation.listeningDescriptor(), context: context)
    }

    /// Accepts sources until one session succeeds (or, without --keep-listening, fails).
    private func serve(_ s: Started, printer: EventPrinter, notifier: SystemdNotifier?) throws {
        // Per wait: refused handshakes do not extend it, a finished session starts a new one.
        func newDeadline() -> ContinuousClock.Instant? { acceptTimeout.map { ContinuousClock.now + .milliseconds(Int64($0 * 1000)) } }
        var deadline = newDeadline()
        while true {
            let stream: TLSStream
            do {
                let left = deadline.map { max(($0 - ContinuousClock.now).seconds, 0.001) }
                stream = try s.listener.accept(timeoutSeconds: left)
            } catch {
                if let deadline, ContinuousClock.now >= deadline {
                    throw failureExit(for: MigrationError(phase: .connect, failure: .timeout("no authenticated source within --accept-timeout"), disposition: .notStarted), printer: printer, side: "destination")
                }
                // The listener was closed by SIGINT/SIGTERM: stop waiting.
                if case .closed = error { throw ExitCode(130) }
                printer.handle(.sessionRefused("\(error)"))
                notifier?.report(.sessionRefused("\(error)"))
                continue
            }
            printer.handle(.connected(peer: stream.peerName))
            notifier?.report(.connected(peer: stream.peerName))
            do {
                _ = try s.receiver.run(stream: stream, listener: s.listener)
                if let dir = output.dumpState { try s.opened.dumpState(to: dir) }
                return
            } catch {
                let code = failureExit(for: error, printer: printer, side: "destination", devices: s.opened)
                if keepListening, let m = error as? MigrationError, m.disposition != .afterCommit,
                   !(m.failure.isCancelled) {
                    notifier?.status("waiting for a source; the last session failed: \(m.description)")
                    deadline = newDeadline()
                    continue
                }
                throw code
            }
        }
    }
}

/// Whether the destination allocates guest memory before it listens. Populating RAM
/// takes page faults off the migration's critical path and fails early when the
/// memory is not there; populating a file on disk would write the whole guest to
/// the disk (a sparse 1 TiB file becomes 1 TiB of zeros) for no gain, since pages
/// the source sends as zero are not written where they already read as zero.
enum PopulatePolicy: String, ExpressibleByArgument, CaseIterable {
    case auto, always, never

    func applies(to backing: GuestMemory.Backing) -> Bool {
        switch self {
        case .always: return true
        case .never: return false
        case .auto: return backing == .memory
        }
    }
}

extension TLSError {
    /// TCP-level failures (before any TLS byte), as opposed to the handshake.
    var isConnectStep: Bool {
        switch self {
        case .connectFailed, .connectTimeout, .resolveFailed, .invalidEndpoint: return true
        default: return false
        }
    }
}

extension MigrationFailure {
    var isCancelled: Bool { if case .cancelled = self { return true } else { return false } }
}
