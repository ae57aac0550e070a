import Foundation
import Testing
import MigrationEngine
import MigrationTLS
import MigrationWire
import SyncPrimitives
import TestSupport
import VFIODevice

/// Session resumption (PROTOCOL.md §13, issue 16): a connection cut in any phase is
/// replaced and the migration ends byte-exact with success on both sides; a source
/// that stays away past the reconnect timeout rolls back as before; a peer with
/// another identity or without the session's secret is refused while the real
/// source still resumes.
@Suite(.serialized) struct SessionResumption {
    /// Where the connection is cut (the first three by raw bytes into the first
    /// connection, the others when a side reaches the phase).
    enum Cut: String, CaseIterable, CustomTestStringConvertible {
        case earlyPrecopy, midDeviceData, latePrecopyPages, latePrecopyIteration, stopAndCopy, completeToReady, commitToResumed
        var testDescription: String { rawValue }
        var rawBytes: Int? {
            switch self {
            case .earlyPrecopy: return 6 << 10           // just past HELLO
            case .midDeviceData: return 100 << 10        // inside the first pass's device data (8 KiB pieces of 32 KiB chunks)
            case .latePrecopyPages: return 1200 << 10    // inside the first pass's pages
            default: return nil
            }
        }
    }

    @Test(arguments: Cut.allCases)
    func aCutInAnyPhaseResumesAndMigratesByteExact(cut: Cut) throws {
        let pair = try SimPair(maxChunk: 32 << 10)
        var options = ResumeRig.senderOptions()
        options.devicePieceBytes = 8 << 10
        let run = try ResumeRig.migrate(pair, options: options, cutFirstAfterRawBytes: cut.rawBytes,
                                        senderEvents: { event, proxy in
            switch (cut, event) {
            case (.latePrecopyIteration, .iterationEnd(1, _, _, _, _)), (.stopAndCopy, .phase(.stopcopy)), (.completeToReady, .phase(.ready)):
                proxy.cut()
            default: break
            }
        }, receiverEvents: { event, proxy in
            if cut == .commitToResumed, case .phase(.resume) = event { proxy.cut() }
        })
        try Guarantee.migrated(run.outcome, pair)
        #expect(run.proxy.cuts >= 1 && run.proxy.connections >= 2, "the cut happened and the source reconnected: \(run.events)")
        #expect(run.events.source.contains("resumed"), "source events: \(run.events.source)")
        #expect(run.events.destination.contains("resumed"), "destination events: \(run.events.destination)")
    }

    /// The cut lands inside the first DIRTY_BITMAP record: when the source asks its
    /// device for the second round's dirty pages, the proxy cuts 40 bytes into the
    /// next record toward the destination, the bitmap that answer becomes.
    @Test func aCutInsideADirtyBitmapResumes() throws {
        var pair = try SimPair()
        let proxyBox = LockedValue<ReconnectProxy?>(nil)
        let queries = LockedValue(0)
        pair.source[0].dirtyPages = QueryHook(pair.source[0].dirtyPages!) {
            if queries.withLock({ n in n += 1; return n }) == 1 { proxyBox.current?.cut(afterNextRawBytes: 40) }
        }
        let run = try ResumeRig.migrate(pair, senderEvents: { event, proxy in
            if case .phase(.precopy) = event { proxyBox.withLock { $0 = proxy } }
        })
        try Guarantee.migrated(run.outcome, pair)
        #expect(run.proxy.cuts == 1 && queries.current >= 1)
        #expect(run.events.source.contains("resumed") && run.events.destination.contains("resumed"), "\(run.events)")
    }

    /// Cut 1 inside the first pass, cut 2 after it, cut 3 when stop-and-copy begins;
    /// each waits for the resume before it (on the session thread: the reader
    /// thread reconnects meanwhile).
    @Test func threeCutsInOneMigrationStillSucceed() throws {
        let pair = try SimPair()
        let resumes = ConditionValue(0)
        let run = try ResumeRig.migrate(pair, cutFirstAfterRawBytes: 100 << 10, senderEvents: { event, proxy in
            switch event {
            case .resumed: resumes.withLock { $0 += 1 }
            case .iterationEnd(1, _, _, _, _): resumes.wait(until: { $0 >= 1 }) { _, _ in }; proxy.cut()
            case .phase(.stopcopy): resumes.wait(until: { $0 >= 2 }) { _, _ in }; proxy.cut()
            default: break
            }
        })
        try Guarantee.migrated(run.outcome, pair)
        #expect(run.proxy.cuts == 3)
        #expect(run.events.source.filter { $0 == "resumed" }.count == 3, "\(run.events.source)")
        #expect(run.events.destination.filter { $0 == "resumed" }.count == 3, "\(run.events.destination)")
    }

    @Test func aSourceAwayPastTheReconnectTimeoutRollsBackAsBefore() throws {
        let pair = try SimPair()
        var options = ResumeRig.senderOptions()
        options.reconnectTimeoutSeconds = 1.5
        var receiverOptions = ResumeRig.receiverOptions()
        receiverOptions.reconnectTimeoutSeconds = 1.5
        let run = try ResumeRig.migrate(pair, options: options, receiverOptions: receiverOptions, senderEvents: { event, proxy in
            if case .iterationEnd(1, _, _, _, _) = event {
                proxy.setRefusing(true)  // the link stays down
                proxy.cut()
            }
        })
        try Guarantee.rolledBack(run.outcome, pair)
        #expect("\(run.outcome.sourceError.map { "\($0)" } ?? "")".contains("--reconnect-timeout"))
        #expect("\(run.outcome.destinationError.map { "\($0)" } ?? "")".contains("--reconnect-timeout"))
        #expect(run.events.source.contains("reconnecting"))
        #expect(!run.events.source.contains("resumed"))
    }

    /// The link goes down in stop-and-copy (the devices stopped) and stays down for
    /// two reconnection attempts: `progress` says so on both sides (lost,
    /// reconnecting, up again with the outage's length), and the source's downtime
    /// so far, and its final downtime, include the outage.
    @Test func anOutageInStopAndCopyShowsInProgressAndTheDowntime() throws {
        let pair = try SimPair()
        let attempts = ConditionValue(0)
        let sourceLinks = LockedValue<[LinkFigures]>([]), destinationLinks = LockedValue<[LinkFigures]>([])
        let run = try ResumeRig.migrate(pair, senderEvents: { event, proxy in
            switch event {
            case .deviceEnd where attempts.withLock({ $0 == 0 }) && !proxy.isRefusing:
                proxy.setRefusing(true)
                proxy.cut()
            case .reconnecting(let n, _): attempts.withLock { $0 = n }
            case .progress(let p): if let link = p.link { sourceLinks.withLock { $0.append(link) } }
            default: break
            }
        }, receiverEvents: { event, _ in
            if case .progress(let p) = event, let link = p.link { destinationLinks.withLock { $0.append(link) } }
        }, whileRunning: { _, proxy, _ in
            attempts.wait(until: { $0 >= 2 }) { _, _ in }
            proxy.setRefusing(false)
        })
        try Guarantee.migrated(run.outcome, pair)
        let source = sourceLinks.current, destination = destinationLinks.current
        #expect(source.drop(while: { $0.connection == .up }).map(\.connection).starts(with: [.lost, .reconnecting, .reconnecting]), "\(source)")
        let up = try #require(source.last { $0.connection == .up }, "\(source)")
        let downtime = try #require(up.downtimeSoFarMs, "stop-and-copy: the downtime so far is known")
        #expect(up.outageSeconds > 0 && downtime >= up.outageSeconds * 1000, "\(up)")
        if case .success(let stats) = run.outcome.source { #expect(stats.downtimeMs >= up.outageSeconds * 1000) }
        #expect(destination.first?.connection == .lost && destination.last?.connection == .up, "\(destination)")
        #expect((destination.last?.outageSeconds ?? 0) > 0, "\(destination)")
    }

    /// After COMMIT a destination device refuses RUNNING and the connection is cut
    /// before the ABORT gets out: the source reconnects and gets the ABORT again,
    /// so it fails naming the device instead of an unknown outcome.
    @Test func aFailureAfterCommitLostWithTheConnectionIsToldAgain() throws {
        let pair = try SimPair(names: ["gpu0", "nic0"])
        pair.destinationSims[1].inject(.failTransition(to: .running))
        let run = try ResumeRig.migrate(pair, receiverEvents: { event, proxy in
            if case .phase(.resume) = event { proxy.cut() }
        })
        let s = try #require(run.outcome.sourceError), d = try #require(run.outcome.destinationError)
        #expect(d.disposition == .afterCommit && d.device == "nic0", "\(d)")
        #expect(s.disposition == .destinationFailed, "\(s)")
        guard case .peerAborted(.deviceError, let text) = s.failure else { Issue.record("source: \(s)"); return }
        #expect(text.containsAll("nic0", "failed to resume"), "\(text)")
        #expect(run.events.source.contains("reconnecting"), "\(run.events.source)")
    }

    /// The operator cancels: the cancel closes the connection before an ABORT can go
    /// out, so the source tells the destination on a resuming connection, and the
    /// destination ends at once ("peer aborted (cancelled)") instead of waiting out
    /// its reconnect timeout.
    @Test func aCancelReachesTheDestinationAlthoughItClosedTheConnection() throws {
        let pair = try SimPair()
        let precopy = ConditionValue(false)
        let run = try ResumeRig.migrate(pair, senderEvents: { event, _ in
            if case .iterationEnd(1, _, _, _, _) = event {
                precopy.withLock { $0 = true }
                Thread.sleep(forTimeInterval: 0.3)  // the cancel comes while pre-copy goes on
            }
        }, whileRunning: { _, _, sender in
            precopy.wait(until: { $0 }) { _, _ in }
            sender.cancel()
        })
        try Guarantee.rolledBack(run.outcome, pair)
        guard case .cancelled? = run.outcome.sourceError?.failure else { Issue.record("source: \(run.outcome.source)"); return }
        guard case .peerAborted(.cancelled, _)? = run.outcome.destinationError?.failure else {
            Issue.record("destination: \(run.outcome.destination)"); return
        }
    }

    /// A destination with `--reconnect-timeout 0` selects no ALPN protocol: the
    /// session is version 1 and a cut fails at once, as before.
    @Test func aDestinationThatDoesNotResumeGetsVersionOneAndACutRollsBack() throws {
        let pair = try SimPair()
        var receiverOptions = ResumeRig.receiverOptions()
        receiverOptions.reconnectTimeoutSeconds = 0
        let run = try ResumeRig.migrate(pair, receiverOptions: receiverOptions, senderEvents: { event, proxy in
            if case .iterationEnd(1, _, _, _, _) = event { proxy.cut() }
        })
        try Guarantee.rolledBack(run.outcome, pair)
        #expect(!run.events.source.contains("connection-lost"), "\(run.events.source)")
        #expect(!run.events.destination.contains("connection-lost"), "\(run.events.destination)")
        #expect(run.proxy.connections == 1)
    }

    /// While the real source cannot get through, a peer with another certificate and
    /// one with the right certificate but no secret try to take the session over.
    @Test func anotherIdentityAndAForgedProofAreRefusedAndTheRealSourceResumes() throws {
        let pair = try SimPair()
        let impostors = LockedValue<[String]>([])
        let run = try ResumeRig.migrateWithLinkDown(pair, allowedSourceNames: ["somebody-else.test"]) { listenerPort in
            impostors.withLock { $0.append(ResumeRig.impostor(port: listenerPort, certificate: "wrongname", forgeProof: false)) }
            impostors.withLock { $0.append(ResumeRig.impostor(port: listenerPort, certificate: "source", forgeProof: true)) }
        }
        let answers = impostors.current
        #expect(answers.count == 2)
        #expect(answers.first == "REFUSE wrongIdentity", "\(answers)")
        #expect(answers.last == "REFUSE badProof", "\(answers)")
        try Guarantee.migrated(run.outcome, pair)
        #expect(run.events.source.contains("resumed"))
        #expect(run.events.destination.filter { $0 == "refused" }.count >= 2, "\(run.events.destination)")
    }
}

/// More than one connection at the destination while its session is suspended
/// (§13.5, §13.8): each is checked on its own, a second one while another is being
/// attached is refused `busy`, a version-1 source is told why in words.
@Suite(.serialized) struct ConcurrentResumingConnections {
    /// The destination holds the attach step of the source's first resuming
    /// connection (its `resumed` event waits) while the proxy cuts that connection:
    /// the source's next connection is refused `busy`, a later one resumes.
    @Test func aConnectionWhileAnotherIsAttachedIsRefusedBusyAndTheSourceRetries() throws {
        let pair = try SimPair()
        let busy = ConditionValue(false)
        let holding = LockedValue(true)
        let run = try ResumeRig.migrate(pair, senderEvents: { event, proxy in
            if case .iterationEnd(1, _, _, _, _) = event { proxy.cut() }
        }, receiverEvents: { event, proxy in
            switch event {
            case .sessionRefused(let text) where text.contains("busy"):
                busy.withLock { $0 = true }
            case .resumed where holding.withLock({ h in defer { h = false }; return h }):
                proxy.cut()
                busy.wait(until: { $0 }, deadline: monotonicSeconds() + 6) { _, _ in }
            default: break
            }
        })
        #expect(busy.withLock { $0 }, "no REFUSE busy: \(run.events.destination)")
        try Guarantee.migrated(run.outcome, pair)
        // The destination attached twice (the cut one, then the retry); the source may
        // have lost the first RESUME_ACCEPT with the cut.
        #expect(run.events.destination.filter { $0 == "resumed" }.count >= 2, "\(run.events.destination)")
        #expect(run.events.source.contains("resumed"), "\(run.events.source)")
    }

    /// A peer with the source's certificate completes TLS and then says nothing: its
    /// handshake may take 10 s, longer than the source's reconnect timeout (8 s), so
    /// the real source resumes only if it is checked beside it.
    @Test func aStalledHandshakeDoesNotHoldUpTheRealSource() throws {
        let pair = try SimPair()
        let staller = LockedValue<TLSStream?>(nil)
        defer { staller.current?.close() }
        let run = try ResumeRig.migrateWithLinkDown(pair) { port in
            staller.withLock { $0 = try? ResumeRig.connect(port: port) }
        }
        #expect(staller.current != nil, "the stalling peer could not connect")
        try Guarantee.migrated(run.outcome, pair)
        #expect(run.events.source.contains("resumed"), "\(run.events.source)")
    }

    /// A version-1 source (no ALPN offered) connects while the session waits for its
    /// own source: it reads a HELLO it accepts, then ABORT `incompatible` whose text
    /// names the suspended session; the real source still resumes.
    @Test func aVersionOneSourceIsToldASessionIsSuspended() throws {
        let pair = try SimPair(), stranger = try SimPair()
        let strangerOutcome = LockedValue<Result<MigrationStats, any Error>?>(nil)
        let run = try ResumeRig.migrateWithLinkDown(pair) { port in
            var options = ResumeRig.senderOptions()
            options.reconnectTimeoutSeconds = 0  // version 1
            let sender = Sender(devices: stranger.source, memory: stranger.sourceMemory, options: options)
            let result = Result { () throws -> MigrationStats in
                try sender.run(stream: try ResumeRig.connect(port: port, protocols: options.applicationProtocols))
            }
            strangerOutcome.withLock { $0 = result }
        }
        try Guarantee.migrated(run.outcome, pair)
        guard case .failure(let error as MigrationError)? = strangerOutcome.current,
              case .peerAborted(.incompatible, let text) = error.failure else {
            Issue.record("the version-1 source: \(String(describing: strangerOutcome.current))"); return
        }
        #expect(text.contains("a session is suspended"), "\(text)")
        Guarantee.sourceDevicesRunning(stranger)
    }
}

/// An in-process migration over version 2 through a `ReconnectProxy`.
enum ResumeRig {
    struct Run {
        var outcome: Outcome
        var proxy: ReconnectProxy
        var events: (source: [String], destination: [String])
    }

    /// SHA-256 digests and no page copies: the suites built on this rig run versions 2
    /// to 4 as deployed peers speak them (and cut at offsets a clean run measured);
    /// versions 5 and 6 have their own (DeviceDigestConformanceTests, PageCopyConformanceTests).
    static func senderOptions() -> SenderOptions {
        var o = Rig.senderOptions(peerTimeout: 10)
        o.reconnectTimeoutSeconds = 8
        o.deviceDigest = .sha256
        o.pageCopies = false
        return o
    }

    static func receiverOptions() -> ReceiverOptions {
        var o = Rig.receiverOptions(peerTimeout: 10)
        o.reconnectTimeoutSeconds = 8
        o.deviceDigest = .sha256
        o.pageCopies = false
        return o
    }

    /// A listener on 127.0.0.1 and the source's TLS context, each side offering the
    /// protocol versions its options speak (ALPN); the caller closes the listener.
    static func listening(receiverOptions: ReceiverOptions, senderOptions: SenderOptions,
                          allowedSourceNames: [String] = []) throws -> (listener: TLSListener, port: UInt16, client: TLSContext) {
        let pki = try TestPKI.get()
        var serverConfig = pki.serverConfig(allowed: allowedSourceNames)
        serverConfig.applicationProtocols = receiverOptions.applicationProtocols
        var clientConfig = pki.clientConfig()
        clientConfig.applicationProtocols = senderOptions.applicationProtocols
        let listener = try TLSListener(endpoint: .tcp(host: "127.0.0.1", port: 0), context: TLSContext(configuration: serverConfig, role: .server))
        guard case .tcp(_, let port) = listener.boundEndpoint else { listener.close(); throw SetupError("no port") }
        return (listener, port, try TLSContext(configuration: clientConfig, role: .client))
    }

    static func migrate(_ pair: SimPair, options: SenderOptions = senderOptions(), receiverOptions: ReceiverOptions = receiverOptions(),
                        cutFirstAfterRawBytes: Int? = nil, allowedSourceNames: [String] = [],
                        senderEvents: @escaping @Sendable (MigrationEvent, ReconnectProxy) -> Void = { _, _ in },
                        receiverEvents: @escaping @Sendable (MigrationEvent, ReconnectProxy) -> Void = { _, _ in },
                        whileRunning: (@Sendable (UInt16, ReconnectProxy, Sender) -> Void)? = nil) throws -> Run {
        ignoreSIGPIPE()
        let (listener, port, client) = try listening(receiverOptions: receiverOptions, senderOptions: options, allowedSourceNames: allowedSourceNames)
        defer { listener.close() }
        let proxy = try ReconnectProxy(targetPort: port, cutFirstAfterRawBytes: cutFirstAfterRawBytes)
        defer { proxy.close() }
        let sourceEvents = LockedValue<[String]>([]), destinationEvents = LockedValue<[String]>([])
        let receiver = Receiver(devices: pair.destination, memory: pair.destinationMemory, options: receiverOptions, events: { e in
            destinationEvents.withLock { $0.append(name(e)) }
            receiverEvents(e, proxy)
        })
        let dst = background { () throws -> MigrationStats in
            try receiver.run(stream: try listener.accept(timeoutSeconds: 30), listener: listener)
        }
        let sender = Sender(devices: pair.source, memory: pair.sourceMemory, options: options, events: { e in
            sourceEvents.withLock { $0.append(name(e)) }
            senderEvents(e, proxy)
        })
        let endpoint = Endpoint.tcp(host: "127.0.0.1", port: proxy.port)
        let src = background { () throws -> MigrationStats in
            let reconnect: Reconnect = { () throws(TLSError) -> TLSStream in try TLSConnector.connect(to: endpoint, context: client, timeoutSeconds: 5) }
            return try sender.run(stream: try reconnect(), reconnect: reconnect)
        }
        whileRunning?(port, proxy, sender)
        let outcome = Outcome(source: src.wait(timeout: 150), destination: dst.wait(timeout: 150))
        return Run(outcome: outcome, proxy: proxy, events: (sourceEvents.current, destinationEvents.current))
    }

    private static func name(_ event: MigrationEvent) -> String {
        switch event {
        case .connectionLost: return "connection-lost"
        case .reconnecting: return "reconnecting"
        case .resumed: return "resumed"
        case .sessionRefused: return "refused"
        case .phase(let p): return "phase \(p)"
        default: return "other"
        }
    }

    /// `migrate` with the link down after the first iteration (the proxy refuses new
    /// connections): once the destination noticed, `whileSuspended` runs with its
    /// listener's port, then the link comes back and the source may resume.
    static func migrateWithLinkDown(_ pair: SimPair, allowedSourceNames: [String] = [],
                                    whileSuspended: @escaping @Sendable (UInt16) -> Void) throws -> Run {
        let lost = ConditionValue(false)
        return try migrate(pair, allowedSourceNames: allowedSourceNames, senderEvents: { event, proxy in
            if case .iterationEnd(1, _, _, _, _) = event {
                proxy.setRefusing(true)
                proxy.cut()
            }
        }, receiverEvents: { event, _ in
            if case .connectionLost = event { lost.withLock { $0 = true } }
        }, whileRunning: { port, proxy, _ in
            lost.wait(until: { $0 }) { _, _ in }
            whileSuspended(port)
            proxy.setRefusing(false)
        })
    }

    /// A TLS connection straight to the destination's listener (not through the proxy).
    static func connect(port: UInt16, certificate: String = "source",
                        protocols: [String] = [ProtocolVersion.v2.alpnIdentifier]) throws -> TLSStream {
        var config = try TestPKI.get().clientConfig(cert: certificate)
        config.applicationProtocols = protocols
        return try TLSConnector.connect(to: .tcp(host: "127.0.0.1", port: port),
                                        context: TLSContext(configuration: config, role: .client), timeoutSeconds: 5)
    }

    /// A peer that tries to resume the session straight at the destination's
    /// listener; returns the destination's first answer to it ("REFUSE reason", ...).
    static func impostor(port: UInt16, certificate: String, forgeProof: Bool) -> String {
        do {
            let stream = try connect(port: port, certificate: certificate)
            defer { stream.close() }
            stream.readTimeoutSeconds = 5
            var decoder: ResumeHandshakeDecoder?
            var buffer: [UInt8] = []
            while true {
                let bytes = try stream.read(maxCount: 4096)
                if bytes.isEmpty { return "closed" }
                buffer += bytes
                // The session id is only known from the destination's RESUME: peek at it.
                if decoder == nil, buffer.count >= 24 + 16 {
                    decoder = ResumeHandshakeDecoder(peer: .destination, sessionID: Array(buffer[24..<40]))
                }
                guard var d = decoder else { continue }
                d.feed(buffer)
                buffer = []
                decoder = d
                switch try d.next() {
                case .refuse(let r): return "REFUSE \(r.reason)"
                case .resume(let r) where forgeProof:
                    var encoder = FrameEncoder()
                    let forged = Resume(sessionID: r.sessionID, role: .source, proof: [UInt8](repeating: 0x5A, count: ResumeProof.size))
                    try stream.write(try encoder.encode(.resume(forged)))
                    decoder = d
                    // Its answer follows.
                    while true {
                        if let m = try decoder!.next() {
                            if case .refuse(let r) = m { return "REFUSE \(r.reason)" }
                            return "\(m)"
                        }
                        let more = try stream.read(maxCount: 4096)
                        if more.isEmpty { return "closed" }
                        decoder!.feed(more)
                    }
                case let m?: return "\(m)"
                case nil: continue
                }
            }
        } catch {
            return "error: \(error)"
        }
    }
}

/// A device's dirty-page source that calls `hook` before each query.
final class QueryHook: DirtyPageSource {
    private let wrapped: any DirtyPageSource
    private let hook: () -> Void
    init(_ wrapped: any DirtyPageSource, hook: @escaping () -> Void) { self.wrapped = wrapped; self.hook = hook }
    func start() throws(DeviceError) { try wrapped.start() }
    func query(startPFN: UInt64, pageSize: UInt64, totalPFNs: UInt64) throws(DeviceError) -> [DirtySegment] {
        hook()
        return try wrapped.query(startPFN: startPFN, pageSize: pageSize, totalPFNs: totalPFNs)
    }
    func stop() throws(DeviceError) { try wrapped.stop() }
}
