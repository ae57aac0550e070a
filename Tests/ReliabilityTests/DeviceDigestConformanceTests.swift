import Foundation
import Testing
import SyncPrimitives
import TestSupport
import MigrationEngine
import MigrationTLS
import MigrationWire
import VFIODevice

/// Version 5 (docs/PROTOCOL.md §16) against a source written by hand: the destination
/// lists encoding 4, verifies XXH3-128 in DEVICE_END when the source lists it too,
/// SHA-256 when it does not, and refuses a field that is wrong in either half.
@Suite(.serialized)
struct DeviceDigestConformanceTests {
    static func pair() throws -> SimPair { try SimPair(names: ["gpu0"], stateSize: 32 << 10, memoryPages: 64, maxChunk: 8 << 10) }

    /// A version-5 session by hand: the source's HELLO lists `encodings` (after the
    /// destination's), then each device's stream and DEVICE_END with `digest`.
    static func session(_ pair: SimPair, encodings: [Encoding], digest: DeviceDigestAlgorithm,
                        corruptByte: Int? = nil) throws -> (ScriptedSession, Hello) {
        var session = try ScriptedSession(pair, version: .v5)
        let offered = session.hello
        session.hello.encodings = encodings
        session.hello.streams = StreamOffer(count: 1, blockPages: 256)
        try session.peer.send(.hello(session.hello))
        try session.peer.sendDeviceStreams(pair, corruptDigestOf: corruptByte == nil ? nil : 0, corruptByte: corruptByte ?? 0, digest: digest)
        try session.peer.send(.complete)
        return (session, offered)
    }

    /// Version 2 and later: the destination waits for the source to close after its ABORT
    /// (§2.4), so read up to the ABORT rather than to the close.
    static func readUntilAbort(_ peer: ScriptedPeer) {
        peer.stream.readTimeoutSeconds = 10
        while peer.abort == nil, (try? peer.next()) != nil {}
        peer.stream.close()
    }

    @Test(arguments: [DeviceDigestAlgorithm.xxh3, .sha256])
    func theListedDigestIsVerified(_ digest: DeviceDigestAlgorithm) throws {
        let pair = try Self.pair()
        let encodings: [Encoding] = digest == .xxh3 ? [.raw, .deflate, .xxh3Digest] : [.raw, .deflate]
        let (session, offered) = try Self.session(pair, encodings: encodings, digest: digest)
        defer { session.close() }
        #expect(offered.version == 5 && offered.encodings.contains(.xxh3Digest), "the destination lists encoding 4: \(offered.encodings)")
        try session.peer.commitAfterReady()
        session.close()
        guard case .success(let stats) = session.receiver.result.wait(timeout: 30) else { Issue.record("receiver failed"); return }
        #expect(stats.devices.first?.digestAlgorithm == digest.description)
        #expect(stats.devices.first?.sha256.isEmpty == (digest == .xxh3))
    }

    /// Byte 3 is in the hash, byte 20 in the 16 zero bytes after it: both refused,
    /// naming XXH3-128, before READY; and SHA-256 where XXH3-128 was agreed.
    @Test(arguments: [("hash", 3), ("padding", 20), ("SHA-256 instead", -1)])
    func aWrongFieldIsADigestMismatch(_ what: String, _ byte: Int) throws {
        let pair = try Self.pair()
        let (session, _) = try Self.session(pair, encodings: [.raw, .deflate, .xxh3Digest], digest: byte < 0 ? .sha256 : .xxh3,
                                            corruptByte: byte < 0 ? nil : byte)
        defer { session.close() }
        Self.readUntilAbort(session.peer)
        #expect(session.peer.abort?.reason == .digestMismatch, "\(what): \(String(describing: session.peer.abort))")
        #expect(session.peer.abort?.message.contains("XXH3-128") == true, "\(String(describing: session.peer.abort))")
        #expect(!session.peer.received.contains { if case .ready = $0.body { true } else { false } })
        Guarantee.destinationNeverRan(pair)
        guard let e = session.receiver.error, case .digestMismatch = e.failure else { Issue.record("receiver: \(session.receiver.result.wait())"); return }
    }

    /// A destination with `--device-digest sha256` does not select version 5, so a
    /// HELLO listing encoding 4 is an unknown encoding there (§16.2, §10).
    @Test func aVersion4DestinationRefusesEncoding4() throws {
        let pair = try Self.pair()
        var options = Rig.receiverOptions(peerTimeout: 20)
        options.deviceDigest = .sha256
        options.maxZstdLanes = 4
        var session = try ScriptedSession(pair, options: options, version: .v4)
        defer { session.close() }
        #expect(!session.hello.encodings.contains(.xxh3Digest))
        session.hello.streams = StreamOffer(count: 1, blockPages: 256)
        session.hello.encodings = [.raw, .deflate, .xxh3Digest]
        try session.peer.send(.hello(session.hello))
        Self.readUntilAbort(session.peer)
        #expect(session.peer.abort?.reason == .protocolError, "\(String(describing: session.peer.abort))")
        #expect(session.peer.abort?.message.contains("unknown encoding 4") == true, "\(String(describing: session.peer.abort))")
        #expect(session.receiver.error != nil, "a version-4 destination refuses encoding 4")
    }

    /// §16.1 between two engines (ALPN, a reconnecting proxy): XXH3-128 only when both
    /// sides want it, else SHA-256 (a side with `sha256` speaks version 4 or below, as an
    /// older peer does); each side's hello event and stats name it, and the guest and
    /// device states arrive byte-exact either way.
    @Test(arguments: [(DeviceDigestAlgorithm.xxh3, DeviceDigestAlgorithm.xxh3), (.sha256, .xxh3), (.xxh3, .sha256)])
    func bothSidesAgreeOnTheDigest(_ source: DeviceDigestAlgorithm, _ destination: DeviceDigestAlgorithm) throws {
        let pair = try SimPair(memoryPages: 256)
        var options = ResumeRig.senderOptions()
        options.deviceDigest = source
        var receiver = ResumeRig.receiverOptions()
        receiver.deviceDigest = destination
        let reported = LockedValue<[DeviceDigestAlgorithm]>([])
        let report: @Sendable (MigrationEvent, ReconnectProxy) -> Void = { e, _ in
            if case .helloAccepted(_, _, _, _, _, let d) = e { reported.withLock { $0.append(d) } }
        }
        let run = try ResumeRig.migrate(pair, options: options, receiverOptions: receiver, senderEvents: report, receiverEvents: report)
        try Guarantee.migrated(run.outcome, pair)
        let agreed: DeviceDigestAlgorithm = source == .xxh3 && destination == .xxh3 ? .xxh3 : .sha256
        #expect(reported.current == [agreed, agreed], "\(reported.current)")
        let stats = try [run.outcome.source.get(), run.outcome.destination.get()]
        #expect(stats.allSatisfy { $0.devices.allSatisfy { $0.digestAlgorithm == agreed.description && $0.digest.count == 64 } })
        #expect(stats[0].devices.map(\.digest) == stats[1].devices.map(\.digest))
    }

    /// Version 5 with what version 4 and 3 add: two streams with zstd lanes, cut by
    /// bytes while lane frames are unacknowledged; the session resumes, replays, and
    /// verifies XXH3-128 digests at the end.
    @Test func aVersion5SessionWithStreamsAndLanesResumes() throws {
        let pair = try SimPair(memoryPages: 2048, dirtyPagesPerStep: 24)
        var options = ZstdLaneSessions.senderOptions(streams: 2)
        options.deviceDigest = .xxh3
        var receiver = ResumeRig.receiverOptions()
        receiver.deviceDigest = .xxh3
        let replayed = LockedValue<UInt64>(0)
        let hello = LockedValue<[(lanes: Int, digest: DeviceDigestAlgorithm)]>([])
        let run = try ResumeRig.migrate(pair, options: options, receiverOptions: receiver, cutFirstAfterRawBytes: 600 << 10,
                                        senderEvents: { event, _ in
                                            if case .resumed(_, let bytes) = event { replayed.withLock { $0 += bytes } }
                                            if case .helloAccepted(_, _, _, _, let l, let d) = event { hello.withLock { $0.append((l, d)) } }
                                        })
        try Guarantee.migrated(run.outcome, pair)
        #expect(run.events.source.contains("resumed"), "\(run.events)")
        #expect(replayed.current > 0, "lane frames were replayed")
        #expect(hello.current.count == 1 && hello.current[0].lanes > 0 && hello.current[0].digest == .xxh3, "\(hello.current)")
        #expect(try run.outcome.destination.get().devices.allSatisfy { $0.digestAlgorithm == "xxh3-128" })
    }
}
