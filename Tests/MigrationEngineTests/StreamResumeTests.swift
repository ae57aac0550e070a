import Foundation
import Testing
import TestSupport
import MigrationTLS
import MigrationWire
import SyncPrimitives
@testable import MigrationEngine

/// The pieces of a several-stream resume (docs/PROTOCOL.md §13.3, §14.5) that a whole
/// migration cannot hit on cue: a STREAM_END whose write has not returned when the
/// session resumes, and an ACK sent before the frame its bytes belong to was decoded.
@Suite("StreamResume")
struct StreamResumeTests {
    /// A connected client stream over 127.0.0.1 (the server end is returned to keep it open).
    static func connectedStream() throws -> (client: TLSStream, server: TLSStream) {
        let (server, client) = try Loopback.contexts()
        let listener = try TLSListener(endpoint: .tcp(host: "127.0.0.1", port: 0), context: server)
        defer { listener.close() }
        let accepted = background { () throws -> TLSStream in try listener.accept(timeoutSeconds: 10) }
        let stream = try TLSConnector.connect(to: listener.boundEndpoint, context: client, timeoutSeconds: 5)
        return (stream, try accepted.wait(timeout: 10).get())
    }

    /// The destination's side of a two-stream session without devices or memory.
    static func extraStreams(writingTo stream: TLSStream) -> DestinationStreams {
        let hello = Hello(sessionID: [UInt8](repeating: 1, count: 16), role: .source, encodings: [.raw], devices: [], memory: [])
        return DestinationStreams(DestinationStreams.Context(
            routing: StreamRouting(count: 2, blockPages: 1), source: hello, limits: .default, workers: 1,
            pageDecoders: [PageDecoderSlot(limits: .default, budget: SessionLanes(limit: 0))], peerTimeoutSeconds: 10,
            devices: [], memory: nil, writer: FrameWriter(stream: stream), events: { _ in },
            progress: LockedValue(ApplyProgress(devices: [])), state: LockedValue(.complete)))
    }

    /// §14.5 steps 3–4: a JOIN claimed before a suspension never attaches after it (its
    /// connection is closed), none is taken while suspended, and after the reopen the
    /// index joins again in the new round.
    @Test("a JOIN claimed before a suspension does not attach after it; the index joins again after the reopen")
    func aStaleJoinDoesNotAttach() throws {
        let (stream, peer) = try Self.connectedStream()
        defer { stream.close(); peer.close() }
        let joins = Self.extraStreams(writingTo: stream)
        defer { joins.stop() }
        #expect(joins.claim(1) == .accepted(epoch: 0))
        _ = try joins.suspend()
        #expect(joins.claim(1) == .refused("the session is suspended: its streams join again after RESUME_ACCEPT"))
        joins.reopen()
        let (late, latePeer) = try Self.connectedStream()
        defer { latePeer.close() }
        joins.attach(1, epoch: 0, stream: late, bytes: [])
        latePeer.readTimeoutSeconds = 5
        var seen = "open"
        do { seen = try latePeer.read(maxCount: 1).isEmpty ? "closed" : "data" } catch {
            if case .readTimeout = error {} else { seen = "closed" }
        }
        #expect(seen == "closed", "the stale JOIN's connection was attached")
        #expect(joins.claim(1) == .accepted(epoch: 1))
    }

    /// Finding: the source counted a stream as ended only once its STREAM_END write
    /// returned (after the bandwidth limiter's sleep); a resume in between joined it
    /// again although the destination had applied it. Numbered is what counts: here
    /// the write fails, so `sendStreamEnd` waits for a replay that never comes.
    @Test("a stream counts as ended once its STREAM_END is numbered, before its write returns")
    func streamEndCountsOnceNumbered() throws {
        let (stream, peer) = try Self.connectedStream()
        defer { peer.close() }
        let writer = FrameWriter(stream: stream)
        writer.enableResumption(policy: .waitForReplay, window: 1 << 20, deviceCount: 0)
        let links = ExtraStreamLinks(writers: [writer], connect: { () throws(TLSError) -> TLSStream in throw .closed },
                                     credentials: try ResumeCredentials(firstConnection: stream, sessionID: [UInt8](repeating: 7, count: 16)),
                                     options: SenderOptions())
        stream.close()  // the write fails: the link is lost and the writer waits for the replay
        let sending = background { () throws in try links.sendStreamEnd(1) }
        var slices = 0
        while !links.hasEnded(1) && slices < 500 {
            Thread.sleep(forTimeInterval: 0.01)
            slices += 1
        }
        let ended = links.hasEnded(1)
        #expect(ended, "STREAM_END was numbered but the stream does not count as ended")
        #expect(writer.nextSequence == 1)
        links.abandon(.cancelled)
        #expect(throws: MigrationFailure.self) { try sending.wait(timeout: 10).get() }
    }

    /// §13.3 at the COMPLETE barrier (§14.4): READY waits for every STREAM_END while the
    /// extra streams may still deliver pages, and the ACK cadence must go on meanwhile.
    /// Finding: the wait sent no ACK at all. The session's hook now runs every slice.
    @Test("the wait for every STREAM_END keeps running the ACK cadence")
    func theBarrierKeepsAcknowledging() throws {
        let (stream, peer) = try Self.connectedStream()
        defer { stream.close(); peer.close() }
        let joins = Self.extraStreams(writingTo: stream)
        var slices = 0
        #expect(throws: MigrationFailure.self) {
            try joins.waitUntilAllEnded(isCancelled: { false }, whileWaiting: { () throws(MigrationFailure) in
                slices += 1
                if slices == 3 { throw .cancelled }  // the third ACK chance: enough to know it keeps coming
            })
        }
        #expect(slices == 3)
    }

    /// §14.5 finding: an extra stream retains only PAGES and KEEPALIVE, which counted
    /// nothing, so its window grew past `--resume-window` while the destination held
    /// its position back. Charged their bookkeeping, a full window holds the stream's
    /// next page (`waitForEntryRoom`) until an ACK frees room.
    @Test("an extra stream whose window is full of retained frames waits for an ACK")
    func aFullExtraWindowWaitsForAnAck() throws {
        let (stream, peer) = try Self.connectedStream()
        defer { stream.close(); peer.close() }
        let writer = FrameWriter(stream: stream)
        writer.enableResumption(policy: .waitForReplay, window: 10 * RetainedWindow.entryCost, deviceCount: 0)
        for _ in 0..<10 { try writer.send(.keepAlive) }
        let done = LockedValue(false)
        let waiting = background { () throws in
            try writer.waitForEntryRoom()
            done.withLock { $0 = true }
        }
        Thread.sleep(forTimeInterval: 0.3)
        #expect(!done.current, "a full window let another frame in")
        try writer.acknowledge(StreamPosition(nextSequence: 1, deviceBytes: []))
        #expect(throws: Never.self) { try waiting.wait(timeout: 10).get() }
    }

    /// §13.3: an ACK counts the bytes read, but its position only the frames decoded.
    /// When it went out before the last frame's bytes were decoded, another must follow
    /// within the 250 ms rule once they are, although no byte more arrives.
    @Test("an ACK sent before the frame's bytes were decoded is followed by one that covers it")
    func ackFollowsDecodedFrames() {
        let before = StreamPosition(nextSequence: 5, deviceBytes: [0])
        let decoded = StreamPosition(nextSequence: 6, deviceBytes: [0])
        let start = ContinuousClock.now
        var schedule = AckSchedule(bytesReceived: 0, position: before)
        var due: [Bool] = []
        due.append(schedule.isDue(bytesReceived: 100, position: before, now: start))
        due.append(schedule.isDue(bytesReceived: 100, position: before, now: start + .milliseconds(250)))
        schedule.sent(bytesReceived: 100, position: before)
        // The frame of those 100 bytes is decoded now; nothing more is read.
        due.append(schedule.isDue(bytesReceived: 100, position: decoded, now: start + .milliseconds(300)))
        due.append(schedule.isDue(bytesReceived: 100, position: decoded, now: start + .milliseconds(550)))
        schedule.sent(bytesReceived: 100, position: decoded)
        due.append(schedule.isDue(bytesReceived: 100, position: decoded, now: start + .seconds(5)))
        #expect(due == [false, true, false, true, false])
    }
}
