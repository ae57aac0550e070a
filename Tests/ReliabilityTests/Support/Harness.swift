import Foundation
import Testing
import MigrationEngine
import MigrationTLS
import MigrationWire
import VFIODevice
import VFIOSimulator
import TestSupport

/// Source and destination simulated devices with guest memory. Destination devices
/// start STOPPED (a fresh simulated device starts RUNNING, which would make "the
/// destination never ran them" unreadable), and their write logs start empty.
struct SimPair: @unchecked Sendable {
    var names: [String]
    var sourceSims: [SimulatedDevice] = []
    var destinationSims: [SimulatedDevice] = []
    var sourceRegions: [RecordingRegion] = []
    var destinationRegions: [RecordingRegion] = []
    var sourceMemory: GuestMemory
    var destinationMemory: GuestMemory
    var source: [SourceDevice] = []
    var destination: [DestinationDevice] = []
    var stateSize: Int

    init(names: [String] = ["gpu0"], stateSize: Int = 256 << 10, memoryPages: UInt64 = 1024,
         maxChunk: Int = 32 << 10, dirtyPagesPerStep: Int = 16, seedBase: UInt64 = 1) throws {
        self.names = names
        self.stateSize = stateSize
        sourceMemory = try GuestMemory(anonymousNamed: "rel-src", size: memoryPages * 4096, pageSize: 4096)
        destinationMemory = try GuestMemory(anonymousNamed: "rel-dst", size: memoryPages * 4096, pageSize: 4096)
        // Deterministic content: a quarter zero pages, text, and pseudo-random pages.
        var x: UInt64 = 0x9E37_79B9_7F4A_7C15
        for pfn in 0..<memoryPages where pfn % 4 != 0 {
            var page = [UInt8](repeating: 0, count: 4096)
            if pfn % 4 == 3 {
                for k in 0..<4096 { x = x &* 6364136223846793005 &+ 1442695040888963407; page[k] = UInt8(truncatingIfNeeded: x >> 33) }
            } else {
                for k in 0..<4096 { page[k] = UInt8(truncatingIfNeeded: k / 16 &+ Int(pfn)) }
            }
            try sourceMemory.writePages(startPFN: pfn, bytes: page)
        }
        for (i, name) in names.enumerated() {
            let config = SimulatedDevice.Configuration(stateSize: stateSize, seed: seedBase + UInt64(i), dirtyPagesPerStep: dirtyPagesPerStep,
                                                       stateBytesPerStep: 2048, maxChunkSize: maxChunk)
            let s = SimulatedDevice(configuration: config, guestMemory: sourceMemory)
            let d = SimulatedDevice(configuration: config, guestMemory: destinationMemory)
            let sr = RecordingRegion(s), dr = RecordingRegion(d)
            let dDevice = MigrationDevice(name: name, region: dr)
            try dDevice.setState(.resuming)
            try dDevice.setState(.stopped)
            dr.resetLog()
            sourceSims.append(s); destinationSims.append(d)
            sourceRegions.append(sr); destinationRegions.append(dr)
            let sDevice = MigrationDevice(name: name, region: sr)
            source.append(SourceDevice(device: sDevice, dirtyPages: RegionDirtyPageSource(device: sDevice), compatibility: "sim/v1 state=\(stateSize)"))
            destination.append(DestinationDevice(device: dDevice, compatibility: "sim/v1 state=\(stateSize)"))
        }
    }

    /// The destination's HELLO as the engine builds it (for fake peers).
    func destinationHello(sessionID: [UInt8]) -> Hello {
        Hello(sessionID: sessionID, role: .destination, encodings: [.raw, .deflate],
              devices: destination.map { DeviceDescriptor(name: $0.name, pageSize: 4096, compatibility: $0.compatibility) },
              memory: [MemoryRange(startPFN: 0, pageCount: destinationMemory.pageCount, pageSize: 4096)])
    }
    func sourceHello(sessionID: [UInt8]) -> Hello {
        Hello(sessionID: sessionID, role: .source, encodings: [.raw, .deflate],
              devices: source.map { DeviceDescriptor(name: $0.name, pageSize: 4096, compatibility: $0.compatibility) },
              memory: [MemoryRange(startPFN: 0, pageCount: sourceMemory.pageCount, pageSize: 4096)])
    }

    func identicalMemory() throws -> Bool {
        try sourceMemory.readPages(startPFN: 0, count: Int(sourceMemory.pageCount))
            == destinationMemory.readPages(startPFN: 0, count: Int(destinationMemory.pageCount))
    }
}

// MARK: - Guarantee checks

enum Guarantee {
    /// Before COMMIT: the source's devices read back RUNNING; the destination never had
    /// RUNNING written and reads back STOPPED; the errors name the phase (and device).
    static func rolledBack(_ o: Outcome, _ pair: SimPair, sourcePhase: Set<MigrationPhase>? = nil,
                           destinationPhase: Set<MigrationPhase>? = nil,
                           sourceDisposition: Set<FailureDisposition> = [.rolledBack],
                           destinationDisposition: Set<FailureDisposition> = [.rolledBack],
                           sourceLocation: SourceLocation = #_sourceLocation) throws {
        sourceDevicesRunning(pair, sourceLocation: sourceLocation)
        destinationNeverRan(pair, sourceLocation: sourceLocation)
        if let e = o.sourceError {
            #expect(sourceDisposition.contains(e.disposition), "source: \(e)", sourceLocation: sourceLocation)
            #expect("\(e)".contains("phase \(e.phase)"), sourceLocation: sourceLocation)
            if let sourcePhase { #expect(sourcePhase.contains(e.phase), "source failed in \(e.phase): \(e)", sourceLocation: sourceLocation) }
        } else if !sourceDisposition.contains(.notStarted) || o.sourceTLSError == nil {
            Issue.record("source should have failed with a MigrationError: \(o.source)", sourceLocation: sourceLocation)
        }
        if let e = o.destinationError {
            #expect(destinationDisposition.contains(e.disposition), "destination: \(e)", sourceLocation: sourceLocation)
            #expect("\(e)".contains("phase \(e.phase)"), sourceLocation: sourceLocation)
            if let destinationPhase { #expect(destinationPhase.contains(e.phase), "destination failed in \(e.phase): \(e)", sourceLocation: sourceLocation) }
        } else if o.destinationTLSError == nil {
            Issue.record("destination should have failed: \(o.destination)", sourceLocation: sourceLocation)
        }
    }

    static func sourceDevicesRunning(_ pair: SimPair, sourceLocation: SourceLocation = #_sourceLocation) {
        for (i, d) in pair.source.enumerated() {
            #expect((try? d.device.readState()) == .running, "source \(d.name) reads back \(String(describing: try? d.device.readState()))", sourceLocation: sourceLocation)
            #expect(pair.sourceSims[i].currentState == .running, sourceLocation: sourceLocation)
        }
    }

    static func destinationNeverRan(_ pair: SimPair, sourceLocation: SourceLocation = #_sourceLocation) {
        for (i, d) in pair.destination.enumerated() {
            let writes = pair.destinationRegions[i].stateWrites
            #expect(!writes.contains { $0.contains(.running) }, "destination \(d.name) was set RUNNING: \(writes)", sourceLocation: sourceLocation)
            #expect((try? d.device.readState()) == .stopped, "destination \(d.name) reads back \(String(describing: try? d.device.readState()))", sourceLocation: sourceLocation)
        }
    }

    /// Success: both sides identical, RUNNING only on the destination.
    static func migrated(_ o: Outcome, _ pair: SimPair, sourceLocation: SourceLocation = #_sourceLocation) throws {
        guard case .success = o.source, case .success = o.destination else {
            Issue.record("migration failed: source \(o.source), destination \(o.destination)", sourceLocation: sourceLocation); return
        }
        for i in pair.names.indices {
            #expect(pair.sourceSims[i].stateSnapshot() == pair.destinationSims[i].stateSnapshot(), "device \(pair.names[i]) differs", sourceLocation: sourceLocation)
            #expect(try pair.destination[i].device.readState() == .running, sourceLocation: sourceLocation)
            #expect(try pair.source[i].device.readState() == .stopped, sourceLocation: sourceLocation)
        }
        #expect(try pair.identicalMemory(), "guest memory differs", sourceLocation: sourceLocation)
    }
}

// MARK: - In-process migration through the proxy

struct Outcome: @unchecked Sendable {
    var source: Result<MigrationStats, any Error>
    var destination: Result<MigrationStats, any Error>
    var proxy: FaultProxy?
    var sourceError: MigrationError? { if case .failure(let e) = source { return e as? MigrationError }; return nil }
    var destinationError: MigrationError? { if case .failure(let e) = destination { return e as? MigrationError }; return nil }
    var sourceTLSError: TLSError? { if case .failure(let e) = source { return e as? TLSError }; return nil }
    var destinationTLSError: TLSError? { if case .failure(let e) = destination { return e as? TLSError }; return nil }
}

enum Rig {
    static let certs = DevCertificates.directory

    static func serverContext() throws -> TLSContext {
        try TLSContext(configuration: TLSConfiguration(
            caFile: "\(certs)/ca.pem", certificateFile: "\(certs)/destination.pem",
            privateKeyFile: "\(certs)/destination-key.pem", peerName: "source.vfio-migrate.test",
            handshakeTimeoutSeconds: 5, allowDevelopmentCertificates: true), role: .server)
    }
    static func clientContext() throws -> TLSContext {
        try TLSContext(configuration: TLSConfiguration(
            caFile: "\(certs)/ca.pem", certificateFile: "\(certs)/source.pem",
            privateKeyFile: "\(certs)/source-key.pem", peerName: "destination.vfio-migrate.test",
            handshakeTimeoutSeconds: 5, allowDevelopmentCertificates: true), role: .client)
    }

    /// Deterministic sender settings: no keep-alive within a short run (interval =
    /// peer timeout / 4), a downtime target no short run misses, so the plaintext
    /// stream is the same in every run with the same devices.
    static func senderOptions(peerTimeout: Double = 60) -> SenderOptions {
        var o = SenderOptions()
        o.workers = 2
        o.peerTimeoutSeconds = peerTimeout
        o.downtimeTargetMs = 60_000
        o.maxIterations = 8
        o.pagesPerFrame = 64
        // Not `auto`: it decides from measured rates and the host's idle CPU, so its
        // stream differs between runs, and the fault tests cut at offsets a clean run measured.
        o.compression = .zlib(level: 1)
        // One stream (§13): the default follows the host's cores, and these rigs cut
        // and count the connection as the one stream (MultiStream sets its own).
        o.streams = 1
        return o
    }
    static func receiverOptions(peerTimeout: Double = 60) -> ReceiverOptions {
        var o = ReceiverOptions()
        o.workers = 2
        o.peerTimeoutSeconds = peerTimeout
        return o
    }

    /// Sender → (proxy, optional) → receiver over 127.0.0.1. `senderEvents` sees the
    /// sender's events on its own thread (synchronously: it may block the sender).
    static func migrate(_ pair: SimPair, fault: FaultProxy.Fault? = nil,
                        options: SenderOptions = senderOptions(), receiverOptions: ReceiverOptions = receiverOptions(),
                        throttle: Double = 0,
                        senderEvents: (@Sendable (MigrationEvent, FaultProxy?) -> Void)? = nil,
                        receiverEvents: (@Sendable (MigrationEvent) -> Void)? = nil,
                        whileRunning: (@Sendable (Sender, Receiver, FaultProxy?) -> Void)? = nil) throws -> Outcome {
        ignoreSIGPIPE()
        let listener = try TLSListener(endpoint: .tcp(host: "127.0.0.1", port: 0), context: try serverContext())
        defer { listener.close() }
        guard case .tcp(_, let port) = listener.boundEndpoint else { throw SetupError("no port") }
        let proxy = try fault.map { try FaultProxy(targetPort: UInt16(port), fault: $0, throttleSecondsPerChunk: throttle) }
        defer { proxy?.close() }
        let receiver = Receiver(devices: pair.destination, memory: pair.destinationMemory, options: receiverOptions,
                                events: { e in receiverEvents?(e) })
        let dst = background { () throws -> MigrationStats in
            let stream = try listener.accept(timeoutSeconds: 30)
            return try receiver.run(stream: stream)
        }
        let sender = Sender(devices: pair.source, memory: pair.sourceMemory, options: options,
                            events: { e in senderEvents?(e, proxy) })
        let client = try clientContext()
        let connectPort = proxy?.port ?? port
        let src = background { () throws -> MigrationStats in
            let stream = try TLSConnector.connect(to: .tcp(host: "127.0.0.1", port: connectPort), context: client, timeoutSeconds: 10)
            return try sender.run(stream: stream)
        }
        whileRunning?(sender, receiver, proxy)
        let s = src.wait(timeout: 150)
        if case .failure = s {
            // A sender that never connected leaves the receiver waiting for its accept.
            if case .failure(let e) = s, e is TLSError { proxy?.close() }
        }
        let d = dst.wait(timeout: 150)
        return Outcome(source: s, destination: d, proxy: proxy)
    }
}

func ignoreSIGPIPE() { signal(SIGPIPE, SIG_IGN) }

extension String {
    func containsAll(_ parts: String...) -> Bool { parts.allSatisfy { self.contains($0) } }
}
