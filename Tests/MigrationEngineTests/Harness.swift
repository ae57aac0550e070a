import Foundation
import MigrationEngine
import MigrationTLS
import MigrationWire
import VFIODevice
import VFIOSimulator
import TestSupport

enum Loopback {
    static let certs = DevCertificates.directory

    /// `version` 2 has both sides offer it by ALPN (zstd, ACKs); 1 offers nothing.
    static func contexts(version: ProtocolVersion = .v1) throws -> (server: TLSContext, client: TLSContext) {
        let protocols = version >= .v2 ? ProtocolVersion.alpnOffer(speaking: [.v1, version]) : []
        return try contexts(alpn: (server: protocols, client: protocols))
    }

    /// Each side offers its own ALPN list, as `ReceiverOptions.applicationProtocols` and
    /// `SenderOptions.applicationProtocols` make them.
    static func contexts(alpn: (server: [String], client: [String])) throws -> (server: TLSContext, client: TLSContext) {
        var server = TLSConfiguration(
            caFile: "\(certs)/ca.pem", certificateFile: "\(certs)/destination.pem",
            privateKeyFile: "\(certs)/destination-key.pem", peerName: "source.vfio-migrate.test",
            allowDevelopmentCertificates: true)
        server.applicationProtocols = alpn.server
        var client = TLSConfiguration(
            caFile: "\(certs)/ca.pem", certificateFile: "\(certs)/source.pem",
            privateKeyFile: "\(certs)/source-key.pem", peerName: "destination.vfio-migrate.test",
            allowDevelopmentCertificates: true)
        client.applicationProtocols = alpn.client
        return (try TLSContext(configuration: server, role: .server), try TLSContext(configuration: client, role: .client))
    }

    typealias Outcome = InProcessMigration.Outcome

    /// Runs a receiver on its own thread and a sender on another, over 127.0.0.1.
    /// `alpn`: each side's own offer instead of `version`'s.
    static func migrate(source: [SourceDevice], sourceMemory: GuestMemory?,
                        destination: [DestinationDevice], destinationMemory: GuestMemory?,
                        options: SenderOptions = quickOptions(), receiverOptions: ReceiverOptions = quickReceiver(),
                        events: @escaping EventSink = { _ in }, version: ProtocolVersion = .v1,
                        alpn: (server: [String], client: [String])? = nil,
                        whileRunning: (@Sendable (Sender) -> Void)? = nil) throws -> Outcome {
        ignoreSIGPIPE()
        let (server, client) = try alpn.map { try contexts(alpn: $0) } ?? contexts(version: version)
        let receiver = Receiver(devices: destination, memory: destinationMemory, options: receiverOptions)
        let sender = Sender(devices: source, memory: sourceMemory, options: options, events: events)
        let result = ResultBox<Outcome>()
        Thread {
            result.set(Result { try InProcessMigration.run(sender: sender, receiver: receiver, serverContext: server, clientContext: client) })
        }.start()
        whileRunning?(sender)
        return try result.wait().get()
    }

    static func quickOptions() -> SenderOptions {
        var o = SenderOptions()
        o.workers = 2
        o.peerTimeoutSeconds = 10
        o.downtimeTargetMs = 50
        o.maxIterations = 8
        return o
    }

    static func quickReceiver() -> ReceiverOptions {
        var o = ReceiverOptions()
        o.workers = 2
        o.peerTimeoutSeconds = 10
        return o
    }
}

/// A destination written in a test: reads the source's frames from `stream` through
/// `decoder` (which checks them) and hands each, with the position an ACK would
/// report after it, to `body` until it returns true.
func readSourceFrames(_ stream: TLSStream, _ decoder: inout FrameDecoder, until body: (Frame, StreamPosition) throws -> Bool) throws {
    while true {
        decoder.feed(try stream.read(maxCount: 1 << 20))
        while let message = try decoder.nextMessage() {
            guard case .frame(let frame) = message else { continue }
            if try body(frame, decoder.position) { return }
        }
    }
}

/// A pair of simulated device sets sharing configurations, with guest memory.
struct SimPair {
    var sourceSims: [SimulatedDevice]
    var destinationSims: [SimulatedDevice]
    var sourceMemory: GuestMemory
    var destinationMemory: GuestMemory
    var source: [SourceDevice]
    var destination: [DestinationDevice]

    init(names: [String] = ["gpu0"], stateSize: Int = 512 << 10, memoryPages: UInt64 = 2048,
         dirtyPagesPerStep: Int = 24, stateBytesPerStep: Int = 4096,
         destinationNames: [String]? = nil, destinationMemoryPages: UInt64? = nil) throws {
        sourceMemory = try GuestMemory(anonymousNamed: "src", size: memoryPages * 4096, pageSize: 4096)
        destinationMemory = try GuestMemory(anonymousNamed: "dst", size: (destinationMemoryPages ?? memoryPages) * 4096, pageSize: 4096)
        // Some initial content: every third page non-zero.
        for pfn in stride(from: UInt64(0), to: memoryPages, by: 3) {
            try sourceMemory.writePages(startPFN: pfn, bytes: [UInt8](repeating: UInt8(truncatingIfNeeded: pfn &* 7 &+ 1), count: 4096))
        }
        var srcSims: [SimulatedDevice] = []
        var dstSims: [SimulatedDevice] = []
        var src: [SourceDevice] = []
        var dst: [DestinationDevice] = []
        for (i, name) in names.enumerated() {
            let config = SimulatedDevice.Configuration(stateSize: stateSize, seed: UInt64(i + 1), dirtyPagesPerStep: dirtyPagesPerStep,
                                                       stateBytesPerStep: stateBytesPerStep, maxChunkSize: 64 << 10)
            let s = SimulatedDevice(configuration: config, guestMemory: sourceMemory)
            let d = SimulatedDevice(configuration: config, guestMemory: destinationMemory)
            srcSims.append(s); dstSims.append(d)
            let sd = MigrationDevice(name: name, region: s)
            src.append(SourceDevice(device: sd, dirtyPages: RegionDirtyPageSource(device: sd), compatibility: "sim/v1 state=\(stateSize)"))
            let dname = destinationNames?[i] ?? name
            dst.append(DestinationDevice(device: MigrationDevice(name: dname, region: d), compatibility: "sim/v1 state=\(stateSize)"))
        }
        sourceSims = srcSims; destinationSims = dstSims; source = src; destination = dst
    }

    func identicalMemory() throws -> Bool {
        guard sourceMemory.pageCount == destinationMemory.pageCount else { return false }
        return try sourceMemory.readPages(startPFN: 0, count: Int(sourceMemory.pageCount))
            == destinationMemory.readPages(startPFN: 0, count: Int(destinationMemory.pageCount))
    }
}

/// Steps the source devices' workload on a thread until stopped.
final class Workload: @unchecked Sendable {  // `stopped`, `done`, `throttle` only under `c`
    private let c = NSCondition()
    private var stopped = false
    private var done = false
    /// Percent of the guest's time taken away, as a VMM's vCPU throttle would: the
    /// steps come that much less often.
    private var throttle = 0
    init(_ sims: [SimulatedDevice], intervalMicroseconds: UInt32 = 500) {
        Thread { [self] in
            while true {
                c.lock(); let s = stopped; let t = throttle; c.unlock()
                if s { break }
                for d in sims { d.workloadStep() }
                usleep(UInt32(Double(intervalMicroseconds) * 100 / Double(max(100 - t, 1))))
            }
            c.lock(); done = true; c.broadcast(); c.unlock()
        }.start()
    }
    func stop() { c.lock(); stopped = true; while !done { c.wait() }; c.unlock() }
    func setThrottle(percent: Int) { c.lock(); throttle = percent; c.unlock() }
}

/// Every event a sender emitted, for tests to look at afterwards.
final class EventLog: @unchecked Sendable {  // `events` only under `lock`
    private let lock = NSLock()
    private var events: [(at: ContinuousClock.Instant, event: MigrationEvent)] = []
    var sink: EventSink { { [self] e in lock.withLock { events.append((.now, e)) } } }
    var all: [MigrationEvent] { lock.withLock { events.map(\.event) } }
    /// When the first event `matching` was emitted.
    func firstInstant(_ matching: (MigrationEvent) -> Bool) -> ContinuousClock.Instant? {
        lock.withLock { events.first { matching($0.event) }?.at }
    }
    var switchoverReasons: [String] { all.compactMap { if case .switchover(let r) = $0 { r } else { nil } } }
    var figures: [ConvergenceFigures] { all.compactMap { if case .iterationEnd(_, _, _, _, let c) = $0 { c } else { nil } } }
}
