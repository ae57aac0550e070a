import Foundation
import MigrationEngine
import MigrationWire
import SyncPrimitives
import Testing
import TestSupport

/// Version 4 (docs/PROTOCOL.md §15): zstd lanes, negotiated by sides that resume and
/// use zstd, continue across a resume because lane frames are replayed byte for byte.
@Suite(.serialized) struct ZstdLaneSessions {
    static func senderOptions(streams: Int = 1) -> SenderOptions {
        var o = ResumeRig.senderOptions()
        o.compression = .zstd(level: 3)
        o.streams = streams
        return o
    }

    /// §15.1: who offers and selects version 4 (with SHA-256 digests: the XXH3-128
    /// digest adds version 5 in front, §16.1).
    @Test func versionFourIsOfferedBySidesThatResumeAndUseZstd() {
        var sha = Self.senderOptions()
        #expect(sha.deviceDigest == .sha256 && sha.applicationProtocols == ["vfio-migrate/4", "vfio-migrate/2"])
        var xxh3 = Self.senderOptions()
        xxh3.deviceDigest = .xxh3
        #expect(xxh3.applicationProtocols == ["vfio-migrate/5", "vfio-migrate/4", "vfio-migrate/2"])
        sha.streams = 4
        #expect(sha.applicationProtocols == ["vfio-migrate/4", "vfio-migrate/3", "vfio-migrate/2"])
        var zlib = Self.senderOptions()
        zlib.compression = .zlib(level: 1)
        zlib.deviceDigest = .sha256
        #expect(zlib.applicationProtocols == ["vfio-migrate/2"], "no zstd: as before")
        var auto = sha
        auto.compression = .auto
        #expect(auto.applicationProtocols.first == "vfio-migrate/4")
        var receiver = ResumeRig.receiverOptions()
        receiver.maxStreams = 1
        receiver.deviceDigest = .sha256
        #expect(receiver.applicationProtocols == ["vfio-migrate/4", "vfio-migrate/2"])
        receiver.maxZstdLanes = 0
        #expect(receiver.applicationProtocols == ["vfio-migrate/2"])
        receiver.maxZstdLanes = 4
        receiver.encodings = [.raw, .deflate]
        #expect(receiver.applicationProtocols == ["vfio-migrate/2"], "--no-zstd: no lanes")
        receiver.deviceDigest = .xxh3
        #expect(receiver.applicationProtocols == ["vfio-migrate/5", "vfio-migrate/2"], "version 5 without zstd: no lanes, the digest")
    }

    /// The same guest with lanes and without (a destination that decodes none): both
    /// byte-exact, and the lanes' history makes fewer bytes on the wire.
    @Test func lanesMigrateByteExactInFewerBytes() throws {
        var wire: [UInt64] = []
        for lanes in [4, 0] {
            let pair = try SimPair(memoryPages: 1024)
            var receiver = ResumeRig.receiverOptions()
            receiver.maxZstdLanes = lanes
            // The hello event names the lanes the session uses: the source's 2 workers, or none.
            let reported = LockedValue<[Int]>([])
            let report: @Sendable (MigrationEvent, ReconnectProxy) -> Void = { e, _ in
                if case .helloAccepted(_, _, _, _, let n, _) = e { reported.withLock { $0.append(n) } }
            }
            let run = try ResumeRig.migrate(pair, options: Self.senderOptions(), receiverOptions: receiver, senderEvents: report, receiverEvents: report)
            try Guarantee.migrated(run.outcome, pair)
            wire.append(try run.outcome.source.get().wireBytes)
            #expect(reported.current == [min(lanes, 2), min(lanes, 2)], "lanes \(lanes): \(reported.current)")
        }
        #expect(wire[0] < wire[1], "with lanes \(wire[0]) B, without \(wire[1]) B")
    }

    /// §15.4: a cut while lane frames are unacknowledged (inside the device data, inside
    /// the pages, after a pass): the source replays them byte for byte, the destination's
    /// lanes continue with them, and the guest arrives byte-exact.
    @Test(arguments: [64 << 10, 400 << 10, 900 << 10])
    func aCutResumesTheLanes(cutAfterRawBytes: Int) throws {
        let pair = try SimPair(memoryPages: 1024, dirtyPagesPerStep: 24)
        let sims = pair.sourceSims
        let run = try ResumeRig.migrate(pair, options: Self.senderOptions(), cutFirstAfterRawBytes: cutAfterRawBytes,
                                        senderEvents: { event, _ in
                                            // Pages dirtied after the first pass go again, on the lanes too.
                                            if case .iterationEnd(iteration: 0, _, _, _, _) = event { for d in sims { d.workloadStep() } }
                                        })
        try Guarantee.migrated(run.outcome, pair)
        #expect(run.events.source.contains("resumed") && run.events.destination.contains("resumed"), "\(run.events)")
        #expect(run.proxy.cuts >= 1)
    }

    /// Two streams, a cut by bytes while both streams' lane frames are unacknowledged:
    /// each extra stream's lanes (its decoder outlives its connection) continue with
    /// its replay, byte for byte. (Found by review: a cut at an event could find nothing
    /// to replay; this one replays, and fails if lane frames were rebuilt or an extra
    /// stream's decoder made again.)
    @Test func anExtraStreamsLanesContinueAfterACutByBytes() throws {
        let pair = try SimPair(memoryPages: 2048, dirtyPagesPerStep: 24)
        let replayed = LockedValue<UInt64>(0)
        let run = try ResumeRig.migrate(pair, options: Self.senderOptions(streams: 2), cutFirstAfterRawBytes: 600 << 10,
                                        senderEvents: { event, _ in
                                            if case .resumed(_, let bytes) = event { replayed.withLock { $0 += bytes } }
                                        })
        try Guarantee.migrated(run.outcome, pair)
        #expect(run.events.source.contains("resumed"), "\(run.events)")
        #expect(replayed.current > 0, "lane frames were replayed")
    }

    /// Several streams, each with its own lanes: a cut of stream 0 resumes every stream,
    /// and each extra stream's lanes continue with its replay.
    @Test func lanesOnSeveralStreamsSurviveACut() throws {
        let pair = try SimPair(memoryPages: 1024, dirtyPagesPerStep: 24)
        var options = Self.senderOptions(streams: 2)
        options.downtimeTargetMs = 0.001
        options.maxIterations = 3
        let cut = LockedValue(false)
        let run = try ResumeRig.migrate(pair, options: options, senderEvents: { event, proxy in
            guard case .iterationEnd(1, _, _, _, _) = event, cut.withLock({ c in defer { c = true }; return !c }) else { return }
            proxy.cut()
        })
        try Guarantee.migrated(run.outcome, pair)
        #expect(run.events.source.contains("resumed"), "\(run.events)")
    }
}
