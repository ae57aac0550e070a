import Testing
@testable import MigrationWire

/// Version 3 with several streams (docs/PROTOCOL.md §14.5): the stream tail of ACK and
/// RESUME_ACCEPT (each extra stream's position), each rule with its exact error, and
/// the version-2 bytes it must leave alone.
@Suite struct StreamPositionTailTests {
    private static let tail: [UInt64] = [7, 0]

    private func position(_ next: UInt64 = 3, streams: [UInt64] = tail) -> StreamPosition {
        StreamPosition(nextSequence: next, deviceBytes: [0, 0], streamSequences: streams)
    }

    /// The source's decoder of a version-3 destination whose session has `streams` streams.
    private func decode(_ bytes: [UInt8], streams: Int, version: ProtocolVersion = .v3) throws(WireError) -> [WireMessage] {
        var decoder = FrameDecoder(peer: .destination, version: version)
        decoder.sessionStreams = streams
        decoder.feed(bytes)
        var messages: [WireMessage] = []
        while let m = try decoder.nextMessage() { messages.append(m) }
        try decoder.finish()
        return messages
    }

    /// A destination's HELLO then `acks`; returns the bytes and the offset of the last ACK.
    private func destination(_ acks: [StreamPosition], version: ProtocolVersion = .v3) -> (bytes: [UInt8], last: Int) {
        var s = StreamBuilder.destination(version: version)
        for p in acks { s.add(.ack(p)) }
        return (s.bytes, s.offsets.last ?? 0)
    }

    @Test func ackAndResumeAcceptTailsRoundTrip() throws {
        let (bytes, _) = destination([position(3, streams: [0, 5, 9]), position(4, streams: [2, 5, 11])])
        let messages = try decode(bytes, streams: 4)
        #expect(messages.last == .resumption(ResumptionFrame(sequence: 2, body: .ack(position(4, streams: [2, 5, 11])))))
        let accept = ResumeAccept(progress: .receiving, destinationNextSequence: 2, position: position(3, streams: [1 << 40, 0]))
        var handshake = ResumeHandshakeDecoder(peer: .destination, sessionID: testSessionID, version: .v3)
        handshake.feed(try FrameEncoder.frame(.resume(Resume(sessionID: testSessionID, role: .destination, proof: Array(repeating: 1, count: 32))), sequence: 0)
                       + FrameEncoder.frame(.resumeAccept(accept), sequence: 0))
        _ = try handshake.next()
        #expect(try handshake.next() == .resumeAccept(accept))
    }

    /// The tail is 8 + 8 × (S − 1) bytes after the §13.6 position; without it the bytes are version 2's.
    @Test func theTailFollowsThePositionAndAOneStreamPositionIsUnchanged() throws {
        let with = try FrameEncoder.frame(.ack(position(3, streams: [7, 0])), sequence: 1)
        let without = try FrameEncoder.frame(.ack(position(3, streams: [])), sequence: 1)
        #expect(without.count == 24 + 16 + 16)
        #expect(with.count == without.count + 8 + 16)
        #expect(Array(with.prefix(without.count))[24...] == without[24...])
        #expect(Array(with[without.count...]) == [2, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    }

    @Test func beforeVersion3ATailIsTrailingBytes() {
        let (bytes, _) = destination([position()], version: .v2)
        #expect(throws: WireError.trailingBytes(frame: .ack, count: 24)) { try decode(bytes, streams: 1, version: .v2) }
    }

    @Test func theTailNamesExactlyTheSessionsExtraStreams() {
        let (three, _) = destination([position(streams: [1, 2, 3])])
        #expect(throws: WireError.positionStreamCount(frame: .ack, declared: 3, expected: 2)) { try decode(three, streams: 3) }
        // A one-stream version-3 session: no tail.
        #expect(throws: WireError.positionStreamCount(frame: .ack, declared: 2, expected: 0)) { try decode(destination([position()]).bytes, streams: 1) }
        // Several streams: the tail is required.
        let (bare, _) = destination([position(streams: [])])
        #expect(throws: WireError.positionStreamCount(frame: .ack, declared: 0, expected: 2)) { try decode(bare, streams: 3) }
    }

    @Test func aTailOfNoStreamsIsRefused() {
        var (bytes, at) = destination([position(streams: [9])])
        bytes = Array(bytes.prefix(bytes.count - 8))  // drop the one sequence …
        bytes[at + 24 + 32] = 0                       // … and make the count 0
        bytes[at + 12] -= 8                           // payload length
        #expect(throws: WireError.invalidValue(frame: .ack, field: "extra stream count (a stream tail names at least stream 1)", value: 0)) {
            try decode(bytes, streams: 2)
        }
    }

    @Test func theTailsReservedBytesAreZero() {
        var (bytes, at) = destination([position()])
        bytes[at + 24 + 32 + 4] = 1
        #expect(throws: WireError.invalidValue(frame: .ack, field: "reserved", value: 1)) { try decode(bytes, streams: 3) }
    }

    @Test func aTailCountBeyondThePayloadIsRefused() {
        var (bytes, at) = destination([position()])
        bytes[at + 24 + 32] = 3
        #expect(throws: WireError.countExceedsPayload(frame: .ack, field: "extra stream count", count: 3, remainingBytes: 16)) {
            try decode(bytes, streams: 3)
        }
    }

    @Test func aStreamsPositionNeverGoesBack() {
        let (bytes, _) = destination([position(3, streams: [7, 4]), position(4, streams: [6, 4])])
        #expect(throws: WireError.positionRegressed(frame: .ack, field: "stream 1 sequence", previous: 7, got: 6)) { try decode(bytes, streams: 3) }
    }

    /// After a resume an extra stream's numbering goes on at its reported position.
    @Test func aRejoinedStreamContinuesAtItsPosition() throws {
        func decoder() -> FrameDecoder {
            FrameDecoder(joinedStream: 1, routing: testRouting, memory: FrameGenerator.joinedMemory, encodings: [.raw], nextSequence: 5)
        }
        let pages = FrameBody.pages(Pages(pageSize: 512, segments: [PageSegment(startPFN: 512, pageCount: 1, encoding: .zero, payload: [])]))
        var atFive = decoder()
        atFive.feed(FrameEncoder.serialize(pages, device: 0, sequence: 5) + (try FrameEncoder.frame(.streamEnd(StreamEnd(streamIndex: 1, frameCount: 6)), sequence: 6)))
        #expect(try atFive.nextMessage() != nil)
        #expect(try atFive.nextMessage() == .resumption(ResumptionFrame(sequence: 6, body: .streamEnd(StreamEnd(streamIndex: 1, frameCount: 6)))))
        var fromZero = decoder()
        fromZero.feed(FrameEncoder.serialize(pages, device: 0, sequence: 0))
        #expect(throws: WireError.sequenceReplay(expected: 5, got: 0)) { try fromZero.nextMessage() }
    }

    /// STREAM_END is retained as its bytes: a resume before the destination applied it sends it again.
    @Test func aRetainedStreamEndIsReplayedAsItWas() throws {
        var window = RetainedWindow(capacity: 1 << 20, deviceCount: 0, nextSequence: 0)
        let pages = FrameBody.pages(Pages(pageSize: 512, segments: [PageSegment(startPFN: 512, pageCount: 2, encoding: .zero, payload: [])]))
        window.record(pages, encoded: FrameEncoder.serialize(pages, device: 0, sequence: 0))
        let end = try FrameEncoder.frame(.streamEnd(StreamEnd(streamIndex: 1, frameCount: 1)), sequence: 1)
        window.record(encoded: end)
        #expect(try window.replay(from: StreamPosition(nextSequence: 0, deviceBytes: [])) == [
            .pages(sequence: 0, pageSize: 512, runs: [RetainedWindow.PageRun(startPFN: 512, pageCount: 2)]), .retained(end),
        ])
        #expect(throws: WireError.resumePointOutsideWindow(frame: .resumeAccept, resumePoint: 3, oldest: 0, next: 2)) {
            try window.replay(from: StreamPosition(nextSequence: 3, deviceBytes: []))
        }
    }
}
