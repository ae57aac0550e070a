import Foundation
import Testing
import TestSupport
import SyncPrimitives
import MigrationEngine
import MigrationTLS
import MigrationWire

/// Protocol version 3 (docs/PROTOCOL.md §14): one session over several TLS streams,
/// in process over 127.0.0.1 with the real listener (extra streams arrive on it).
@Suite("MultiStream", .serialized)
struct MultiStreamTests {
    struct Run {
        var outcome: Outcome
        /// The `streams` each side's `hello` event reported.
        var streams: (source: Int?, destination: Int?)
        var events: (source: [String], destination: [String])
        var sourceStats: MigrationStats? { if case .success(let s) = outcome.source { s } else { nil } }
    }

    /// SHA-256 digests: version 3 as deployed peers speak it (version 5: DeviceDigestConformanceTests).
    static func senderOptions(streams: Int, reconnect: Double = 8) -> SenderOptions {
        var o = Rig.senderOptions(peerTimeout: 10)
        o.deviceDigest = .sha256
        o.pageCopies = false  // versions 3 and 4 as deployed; version 6: PageCopyConformanceTests
        o.streams = streams
        o.reconnectTimeoutSeconds = reconnect
        o.downtimeTargetMs = 20
        return o
    }

    static func receiverOptions(maxStreams: Int, reconnect: Double = 8) -> ReceiverOptions {
        var o = Rig.receiverOptions(peerTimeout: 10)
        o.deviceDigest = .sha256
        o.pageCopies = false
        o.maxStreams = maxStreams
        o.reconnectTimeoutSeconds = reconnect
        return o
    }

    /// Events by name on each side, and the proxy every connection went through.
    struct Link: Sendable {
        let proxy: ReconnectProxy
        let listenerPort: UInt16
    }

    /// Every connection goes through a `ReconnectProxy` (stream k is its connection k + 1
    /// until a cut), so a test can cut one stream or the whole link from an event.
    static func migrate(_ pair: SimPair, options: SenderOptions, receiverOptions: ReceiverOptions, workload: Bool = true,
                        prepare: ((Link) -> Void)? = nil,
                        senderEvents: (@Sendable (MigrationEvent, Link) -> Void)? = nil,
                        receiverEvents: (@Sendable (MigrationEvent) -> Void)? = nil) throws -> Run {
        ignoreSIGPIPE()
        let (listener, port, client) = try ResumeRig.listening(receiverOptions: receiverOptions, senderOptions: options)
        defer { listener.close() }
        let proxy = try ReconnectProxy(targetPort: port)
        defer { proxy.close() }
        let link = Link(proxy: proxy, listenerPort: port)
        prepare?(link)
        let reported = LockedValue<(source: Int?, destination: Int?)>((nil, nil))
        let names = LockedValue<(source: [String], destination: [String])>(([], []))
        let receiver = Receiver(devices: pair.destination, memory: pair.destinationMemory, options: receiverOptions, events: { e in
            if case .helloAccepted(_, _, _, let n, _, _) = e { reported.withLock { $0.destination = n } }
            names.withLock { $0.destination.append(name(e)) }
            receiverEvents?(e)
        })
        let dst = background { () throws -> MigrationStats in
            try receiver.run(stream: try listener.accept(timeoutSeconds: 30), listener: listener)
        }
        let sender = Sender(devices: pair.source, memory: pair.sourceMemory, options: options, events: { e in
            if case .helloAccepted(_, _, _, let n, _, _) = e { reported.withLock { $0.source = n } }
            names.withLock { $0.source.append(name(e)) }
            senderEvents?(e, link)
        })
        let endpoint = Endpoint.tcp(host: "127.0.0.1", port: proxy.port)
        let src = background { () throws -> MigrationStats in
            let connect: Reconnect = { () throws(TLSError) -> TLSStream in try TLSConnector.connect(to: endpoint, context: client, timeoutSeconds: 5) }
            return try sender.run(stream: try connect(), reconnect: connect)
        }
        let running = workload ? SoakWorkload(pair.sourceSims) : nil
        let s = src.wait(timeout: 120)
        running?.stop()
        let d = dst.wait(timeout: 120)
        return Run(outcome: Outcome(source: s, destination: d, proxy: nil), streams: reported.current, events: names.current)
    }

    private static func name(_ event: MigrationEvent) -> String {
        switch event {
        case .connectionLost: return "connection-lost"
        case .resumed: return "resumed"
        case .sessionRefused: return "refused"
        default: return "other"
        }
    }

    @Test("N streams with a workload writing guest pages during pre-copy: byte-exact, every side reports N", arguments: [2, 4])
    func severalStreamsMigrateByteExact(streams: Int) throws {
        let pair = try SimPair(memoryPages: 1024, dirtyPagesPerStep: 24)
        // Besides the background workload, one step right after the first pass (from the
        // sender's own event, before it reads the dirty log again): the next pass must
        // send pages again on whatever streams own them, on any machine.
        let sims = pair.sourceSims
        let run = try Self.migrate(pair, options: Self.senderOptions(streams: streams), receiverOptions: Self.receiverOptions(maxStreams: 8),
                                   senderEvents: { e, _ in
                                       if case .iterationEnd(iteration: 0, _, _, _, _) = e { for d in sims { d.workloadStep() } }
                                   })
        try Guarantee.migrated(run.outcome, pair)
        #expect(run.streams.source == streams && run.streams.destination == streams)
        #expect((run.sourceStats?.pagesSent ?? 0) > 1024, "the pages dirtied after the first pass went again")
    }

    @Test("--max-streams caps the source's --streams")
    func destinationCapsTheStreams() throws {
        let pair = try SimPair(memoryPages: 512)
        let run = try Self.migrate(pair, options: Self.senderOptions(streams: 4), receiverOptions: Self.receiverOptions(maxStreams: 3))
        try Guarantee.migrated(run.outcome, pair)
        #expect(run.streams.source == 3 && run.streams.destination == 3)
    }

    /// A version-3 source meets a destination that does not select 3: `--max-streams 1`
    /// (version 2) or `--reconnect-timeout 0` (version 1). One stream, as before.
    @Test("a version-3 source falls back to one stream against a version-2 or version-1 destination",
          arguments: [(1, 8.0), (8, 0.0)])
    func fallsBackToOneStream(maxStreams: Int, receiverReconnect: Double) throws {
        let pair = try SimPair(memoryPages: 512)
        let run = try Self.migrate(pair, options: Self.senderOptions(streams: 4),
                                   receiverOptions: Self.receiverOptions(maxStreams: maxStreams, reconnect: receiverReconnect))
        try Guarantee.migrated(run.outcome, pair)
        #expect(run.streams.source == 1 && run.streams.destination == 1)
    }

    @Test("--streams 1 offers no version 3; --reconnect-timeout 0 offers nothing (version 1)")
    func oneStreamOffersWhatItDidBefore() {
        // With SHA-256 digests (the XXH3-128 digest adds version 5 in front, §16.1).
        #expect(Self.senderOptions(streams: 1).applicationProtocols == ["vfio-migrate/2"])
        #expect(Self.senderOptions(streams: 4).applicationProtocols == ["vfio-migrate/3", "vfio-migrate/2"])
        var xxh3 = Self.senderOptions(streams: 4)
        xxh3.deviceDigest = .xxh3
        #expect(xxh3.applicationProtocols == ["vfio-migrate/5", "vfio-migrate/3", "vfio-migrate/2"])
        #expect(Self.senderOptions(streams: 4, reconnect: 0).applicationProtocols == [])
        // A destination that decodes zstd also takes version 4 (zstd lanes, §15.1).
        #expect(Self.receiverOptions(maxStreams: 1).applicationProtocols == ["vfio-migrate/4", "vfio-migrate/2"])
        #expect(Self.receiverOptions(maxStreams: 8, reconnect: 0).applicationProtocols == [])
        #expect(SenderOptions().streams == StreamCount.defaultStreams)
        #expect(StreamCount.forThroughput(cores: 2) == 1 && StreamCount.forThroughput(cores: 4) == 1)
        #expect(StreamCount.forThroughput(cores: 8) == 4 && StreamCount.forThroughput(cores: 32) == 16)
        #expect(StreamCount.forThroughput(cores: 128) == StreamCount.defaultMaxStreams)
    }

    /// Where a cut lands: pre-copy (after the first pass), as stop-and-copy begins (the
    /// devices stop while the link is down), or once every extra stream sent STREAM_END.
    enum CutPoint: String, CaseIterable, CustomTestStringConvertible {
        case precopy, stopCopy, streamsEnded
        var testDescription: String { rawValue }
        func matches(_ event: MigrationEvent) -> Bool {
            switch (self, event) {
            case (.precopy, .iterationEnd(1, _, _, _, _)), (.stopCopy, .phase(.stopcopy)), (.streamsEnded, .deviceEnd): true
            default: false
            }
        }
    }

    /// Exactly three pre-copy passes whatever the machine's speed, so a cut after the
    /// second always lands in pre-copy.
    static func iteratingThrice(streams: Int) -> SenderOptions {
        var options = senderOptions(streams: streams)
        options.downtimeTargetMs = 0.001
        options.maxIterations = 3
        return options
    }

    /// §14.5: losing stream 0 or an extra stream suspends the whole session; it resumes,
    /// every extra stream joins again and replays what the destination lacks, and the
    /// guest arrives byte-exact under a workload that keeps writing pages.
    @Test("a cut of stream 0 or of an extra stream resumes the session byte-exact",
          arguments: [2, 4], [0, 1])
    func aCutStreamResumes(streams: Int, cutExtra: Int) throws {
        for point in CutPoint.allCases {
            let pair = try SimPair(memoryPages: 512, dirtyPagesPerStep: 24)
            let cut = LockedValue(false)
            // Connection k + 1 is stream k: the extra stream cut is the last one.
            let connection = cutExtra == 0 ? 1 : streams
            let run = try Self.migrate(pair, options: Self.iteratingThrice(streams: streams), receiverOptions: Self.receiverOptions(maxStreams: 4),
                                       senderEvents: { e, link in
                                           guard point.matches(e), cut.withLock({ c in defer { c = true }; return !c }) else { return }
                                           link.proxy.cut(connection: connection)
                                       })
            try Guarantee.migrated(run.outcome, pair)
            #expect(run.streams.source == streams, "\(point)")
            // An extra stream cut after its STREAM_END may have been applied whole and closed
            // already: then there is nothing to resume (both outcomes are right).
            if point == .streamsEnded && cutExtra == 1 { continue }
            #expect(run.events.source.contains("resumed") && run.events.destination.contains("resumed"), "\(point): \(run.events)")
        }
    }

    /// §14.5: a loss while the extra streams join again is resumed like any other. The
    /// link is cut; once the destination resumed, stream 0's new connection is cut too
    /// before stream 1's JOIN reaches the destination, which is suspended again and
    /// refuses that JOIN `streamRefused`: the source resumes once more, not fails.
    @Test("a loss while the extra streams join again is resumed again")
    func aLossDuringTheRejoinIsResumedAgain() throws {
        let pair = try SimPair(memoryPages: 512, dirtyPagesPerStep: 24)
        let destination = LockedValue((losses: 0, resumes: 0))
        let held = LockedValue(false)
        let run = try Self.migrate(pair, options: Self.iteratingThrice(streams: 3), receiverOptions: Self.receiverOptions(maxStreams: 3),
                                   prepare: { link in
                                       // Connections 1–3 are the streams, 4 the resume: 5 is the first JOIN after it.
                                       link.proxy.onAccept { number in
                                           guard number >= 5, held.withLock({ h in defer { h = true }; return !h }) else { return }
                                           Self.wait(on: destination) { $0.resumes >= 1 }
                                           link.proxy.cut()
                                           Self.wait(on: destination) { $0.losses >= 2 }
                                       }
                                   },
                                   senderEvents: { e, link in
                                       if case .iterationEnd(1, _, _, _, _) = e { link.proxy.cut() }
                                   },
                                   receiverEvents: Self.counting(destination))
        try Guarantee.migrated(run.outcome, pair)
        #expect(destination.current.losses >= 2 && destination.current.resumes >= 2, "\(destination.current)")
        #expect(run.events.destination.contains("refused"), "the JOIN while suspended was refused: \(run.events.destination)")
    }

    /// §14.3: a failure during the first joins is a loss like any. Stream 0 is cut while
    /// the proxy holds stream 1's first JOIN until the destination suspended: the JOIN
    /// is refused `streamRefused`, the session resumes and stream 1 joins then.
    @Test("a first JOIN refused because the destination suspended is resumed")
    func aFirstJoinRefusedIsResumed() throws {
        let pair = try SimPair(memoryPages: 512, dirtyPagesPerStep: 24)
        let destination = LockedValue((losses: 0, resumes: 0))
        let accepted = LockedValue(false)
        let counting = Self.counting(destination)
        let run = try Self.migrate(pair, options: Self.iteratingThrice(streams: 2), receiverOptions: Self.receiverOptions(maxStreams: 2),
                                   prepare: { link in
                                       link.proxy.onAccept { number in
                                           guard number == 2 else { return }  // stream 1's first JOIN
                                           // The source joins once its HELLO is sent; a loss before the
                                           // destination accepted it ends the attempt (§13.1), so cut after.
                                           Self.wait(on: accepted) { $0 }
                                           link.proxy.cut(connection: 1)
                                           Self.wait(on: destination) { $0.losses >= 1 }
                                       }
                                   },
                                   receiverEvents: { e in
                                       counting(e)
                                       if case .phase(.precopy) = e { accepted.withLock { $0 = true } }
                                   })
        try Guarantee.migrated(run.outcome, pair)
        #expect(run.streams.source == 2)
        #expect(destination.current.resumes >= 1, "\(destination.current)")
        #expect(run.events.destination.contains("refused"), "the first JOIN while suspended was refused: \(run.events.destination)")
    }

    /// The destination's losses and resumes, counted from its events.
    static func counting(_ destination: LockedValue<(losses: Int, resumes: Int)>) -> @Sendable (MigrationEvent) -> Void {
        { e in
            switch e {
            case .connectionLost: destination.withLock { $0.losses += 1 }
            case .resumed: destination.withLock { $0.resumes += 1 }
            default: break
            }
        }
    }

    /// Until `done` holds (at most 10 s: a session that never gets there fails its checks).
    static func wait<T: Sendable>(on value: LockedValue<T>, until done: (T) -> Bool) {
        var slices = 0
        while !done(value.current) && slices < 1000 {
            Thread.sleep(forTimeInterval: 0.01)
            slices += 1
        }
    }

    /// The link stays down past `--reconnect-timeout`: both sides give up and the source
    /// rolls back as a one-stream session does.
    @Test("a link down past --reconnect-timeout rolls the several-stream session back")
    func aLinkDownTooLongRollsBack() throws {
        let pair = try SimPair(memoryPages: 512, dirtyPagesPerStep: 24)
        var options = Self.senderOptions(streams: 2, reconnect: 1.5)
        options.downtimeTargetMs = 0.001  // keeps iterating until the cut
        options.maxIterations = 1000
        let run = try Self.migrate(pair, options: options, receiverOptions: Self.receiverOptions(maxStreams: 2, reconnect: 1.5),
                                   senderEvents: { e, link in
                                       if case .iterationEnd(1, _, _, _, _) = e {
                                           link.proxy.setRefusing(true)
                                           link.proxy.cut()
                                       }
                                   })
        try Guarantee.rolledBack(run.outcome, pair)
        #expect("\(run.outcome.sourceError.map { "\($0)" } ?? "")".contains("--reconnect-timeout"))
        #expect("\(run.outcome.destinationError.map { "\($0)" } ?? "")".contains("--reconnect-timeout"))
        #expect(!run.events.source.contains("resumed"))
    }

    /// After a resume a peer with the source's certificate but not the session's secret
    /// tries to join a stream: refused `badProof`, and the real source's session goes on.
    @Test("a forged JOIN after a resume is refused and the session still succeeds")
    func aForgedJoinAfterAResumeIsRefused() throws {
        let pair = try SimPair(memoryPages: 512, dirtyPagesPerStep: 24)
        let answers = LockedValue<[String]>([])
        let run = try Self.migrate(pair, options: Self.iteratingThrice(streams: 2), receiverOptions: Self.receiverOptions(maxStreams: 2),
                                   senderEvents: { e, link in
                                       switch e {
                                       case .iterationEnd(1, _, _, _, _): link.proxy.cut(connection: 1)
                                       case .resumed: answers.withLock { $0.append(Self.forgedJoin(port: link.listenerPort)) }
                                       default: break
                                       }
                                   })
        try Guarantee.migrated(run.outcome, pair)
        #expect(answers.current == ["REFUSE badProof"])
        #expect(run.events.destination.contains("refused"), "\(run.events.destination)")
    }

    /// A JOIN of stream 1 with a made-up proof, straight at the destination's listener;
    /// returns its answer ("REFUSE reason", ...).
    static func forgedJoin(port: UInt16) -> String {
        do {
            let stream = try ResumeRig.connect(port: port, protocols: [ProtocolVersion.v3.alpnIdentifier])
            defer { stream.close() }
            stream.readTimeoutSeconds = 5
            var buffer: [UInt8] = []
            while buffer.count < 24 + 16 {
                let bytes = try stream.read(maxCount: 4096)
                if bytes.isEmpty { return "closed" }
                buffer += bytes
            }
            // The session id is only known from the destination's RESUME: peek at it.
            var decoder = ResumeHandshakeDecoder(peer: .destination, sessionID: Array(buffer[24..<40]), version: .v3)
            decoder.feed(buffer)
            while true {
                switch try decoder.next() {
                case .resume(let r):
                    var encoder = FrameEncoder()
                    let forged = Join(sessionID: r.sessionID, streamIndex: 1, proof: [UInt8](repeating: 0x5A, count: ResumeProof.size))
                    try stream.write(try encoder.encode(.join(forged)))
                case .refuse(let r): return "REFUSE \(r.reason)"
                case let m?: return "\(m)"
                case nil:
                    let more = try stream.read(maxCount: 4096)
                    if more.isEmpty { return "closed" }
                    decoder.feed(more)
                }
            }
        } catch {
            return "error: \(error)"
        }
    }
}
