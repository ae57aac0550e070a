import Testing
@testable import MigrationWire

/// Version 3 (docs/PROTOCOL.md §14): the HELLO stream tail, JOIN, JOIN_ACCEPT,
/// STREAM_END, the join proof and the PFN routing, each rule with its rejection.
@Suite struct StreamFrameTests {
    private func decodeHello(_ hello: Hello, as version: ProtocolVersion) throws(WireError) -> Hello {
        var decoder = FrameDecoder(peer: hello.role, version: version)
        decoder.feed(FrameEncoder.serialize(.hello(hello), device: 0, sequence: 0))
        guard case .frame(let frame)? = try decoder.nextMessage(), case .hello(let decoded) = frame.body else {
            Issue.record("no HELLO decoded"); return hello
        }
        return decoded
    }

    /// A joined decoder for stream 1 of `testRouting`, fed `bodies` numbered from 0.
    private func joined(_ bodies: [ResumptionBodyOrFrame]) throws(WireError) -> [WireMessage] {
        var s = StreamBuilder()
        for b in bodies {
            switch b {
            case .frame(let body): s.add(body)
            case .session(let body): s.add(body)
            }
        }
        var decoder = FrameDecoder(joinedStream: 1, routing: testRouting, memory: [MemoryRange(startPFN: 0, pageCount: 2048, pageSize: 512)],
                                   encodings: [.raw, .deflate])
        decoder.feed(s.bytes)
        var out: [WireMessage] = []
        while let m = try decoder.nextMessage() { out.append(m) }
        try decoder.finish()
        return out
    }
    enum ResumptionBodyOrFrame { case frame(FrameBody), session(ResumptionBody) }

    private func ownPages(_ start: UInt64 = 512) -> FrameBody {
        .pages(Pages(pageSize: 512, segments: [PageSegment(startPFN: start, pageCount: 2, encoding: .zero, payload: [])]))
    }

    @Test func helloStreamTailRoundTripsInVersion3() throws {
        for role in [Role.source, .destination] {
            let hello = testHello(role: role, version: .v3)
            #expect(try decodeHello(hello, as: .v3) == hello)
            #expect(hello.streams != nil)
        }
    }

    @Test func aVersion2HelloWithTheTailIsTrailingBytes() {
        var hello = testHello(role: .source, version: .v2)
        hello.streams = StreamOffer(count: 2, blockPages: 64)
        #expect(throws: WireError.trailingBytes(frame: .hello, count: 8)) { try decodeHello(hello, as: .v2) }
    }

    @Test func aVersion3HelloWithoutTheTailIsTruncated() {
        let hello = testHello(role: .destination, version: .v3)
        var bare = hello
        bare.streams = nil
        #expect(throws: WireError.truncated(frame: .hello, field: "stream count")) { try decodeHello(bare, as: .v3) }
    }

    @Test func helloTailValuesAreChecked() {
        var source = testHello(role: .source, version: .v3)
        source.streams = StreamOffer(count: 0, blockPages: 64)
        #expect(throws: WireError.invalidValue(frame: .hello, field: "stream count", value: 0)) { try decodeHello(source, as: .v3) }
        source.streams = StreamOffer(count: 2, blockPages: 0)
        #expect(throws: WireError.invalidValue(frame: .hello, field: "stream block pages", value: 0)) { try decodeHello(source, as: .v3) }
        var destination = testHello(role: .destination, version: .v3)
        destination.streams = StreamOffer(count: 4, blockPages: 7)
        #expect(throws: WireError.invalidValue(frame: .hello, field: "stream block pages", value: 7)) { try decodeHello(destination, as: .v3) }
    }

    @Test func joinAndJoinAcceptRoundTripThroughTheHandshakeDecoder() throws {
        let join = Join(sessionID: testSessionID, streamIndex: 3, proof: Array(repeating: 0xAB, count: 32))
        var source = ResumeHandshakeDecoder(peer: .source, sessionID: testSessionID, version: .v3)
        source.feed(try FrameEncoder.frame(.join(join), sequence: 0) + FrameEncoder.serialize(.keepAlive, device: 0, sequence: 0))
        #expect(try source.next() == .join(join))
        #expect(source.step == .finished)
        #expect(source.takeRemainingBytes().count == FrameHeader.size)  // the stream's first numbered frame

        var destination = ResumeHandshakeDecoder(peer: .destination, sessionID: testSessionID, version: .v3)
        let resume = Resume(sessionID: testSessionID, role: .destination, proof: Array(repeating: 1, count: 32))
        destination.feed(try FrameEncoder.frame(.resume(resume), sequence: 0) + FrameEncoder.frame(.joinAccept(JoinAccept(streamIndex: 3)), sequence: 0))
        #expect(try destination.next() == .resume(resume))
        #expect(try destination.next() == .joinAccept(JoinAccept(streamIndex: 3)))
    }

    @Test func joinIsUnknownBeforeVersion3() throws {
        var decoder = ResumeHandshakeDecoder(peer: .source, sessionID: testSessionID, version: .v2)
        decoder.feed(try FrameEncoder.frame(.join(Join(sessionID: testSessionID, streamIndex: 1, proof: Array(repeating: 0, count: 32))), sequence: 0))
        #expect(throws: WireError.unknownFrameType(17)) { try decoder.next() }
    }

    @Test func joinOfAnotherSessionOrStreamZeroIsRefused() throws {
        var other = ResumeHandshakeDecoder(peer: .source, sessionID: testSessionID, version: .v3)
        other.feed(try FrameEncoder.frame(.join(Join(sessionID: Array(repeating: 9, count: 16), streamIndex: 1, proof: Array(repeating: 0, count: 32))), sequence: 0))
        #expect(throws: WireError.sessionMismatch(frame: .join)) { try other.next() }
        var zero = ResumeHandshakeDecoder(peer: .source, sessionID: testSessionID, version: .v3)
        var payload = payloadBytes(.join(Join(sessionID: testSessionID, streamIndex: 1, proof: Array(repeating: 0, count: 32))))
        payload[16] = 0  // stream index 0
        zero.feed(rawFrame(type: FrameType.join.rawValue, sequence: 0, payload: payload))
        #expect(throws: WireError.invalidValue(frame: .join, field: "stream index (0 is the session's first connection)", value: 0)) { try zero.next() }
    }

    @Test func aJoinedStreamCarriesItsPagesThenStreamEnd() throws {
        let messages = try joined([.frame(ownPages()), .frame(.keepAlive), .frame(ownPages(1000)),
                                   .session(.streamEnd(StreamEnd(streamIndex: 1, frameCount: 3)))])
        #expect(messages.count == 4)
        #expect(messages.last == .resumption(ResumptionFrame(sequence: 3, body: .streamEnd(StreamEnd(streamIndex: 1, frameCount: 3)))))
    }

    @Test func aPageOfAnotherStreamsPFNIsRefused() {
        // 1022..<1026 starts in stream 1's block (512..<1024) and runs into stream 0's.
        #expect(throws: WireError.pageOnForeignStream(pfn: 1024, stream: 1, owner: 0)) {
            try joined([.frame(.pages(Pages(pageSize: 512, segments: [PageSegment(startPFN: 1022, pageCount: 4, encoding: .zero, payload: [])])))])
        }
    }

    @Test func streamZeroRefusesAPageItDoesNotOwn() throws {
        var s = StreamBuilder.source(memory: [MemoryRange(startPFN: 0, pageCount: 2048, pageSize: 4096)], version: .v3)
        s.add(.pages(Pages(pageSize: 4096, segments: [PageSegment(startPFN: 100, pageCount: 1, encoding: .zero, payload: [])])))
        s.add(.pages(Pages(pageSize: 4096, segments: [PageSegment(startPFN: 600, pageCount: 1, encoding: .zero, payload: [])])))
        var decoder = FrameDecoder(peer: .source, version: .v3)
        decoder.feed(s.bytes)
        #expect(try decoder.nextMessage() != nil)  // HELLO
        #expect(try decoder.nextMessage() != nil)  // PFN 100: stream 0's
        #expect(throws: WireError.pageOnForeignStream(pfn: 600, stream: 0, owner: 1)) { try decoder.nextMessage() }
    }

    @Test func streamEndMustNameItsStreamAndCount() {
        #expect(throws: WireError.streamEndMismatch(field: "stream index", declared: 2, actual: 1)) {
            try joined([.session(.streamEnd(StreamEnd(streamIndex: 2, frameCount: 0)))])
        }
        #expect(throws: WireError.streamEndMismatch(field: "frame count", declared: 5, actual: 1)) {
            try joined([.frame(.keepAlive), .session(.streamEnd(StreamEnd(streamIndex: 1, frameCount: 5)))])
        }
    }

    @Test func nothingFollowsStreamEndAndOnlyPagesTravelOnAJoinedStream() {
        #expect(throws: WireError.unexpectedFrame(type: .keepAlive, state: .complete)) {
            try joined([.session(.streamEnd(StreamEnd(streamIndex: 1, frameCount: 0))), .frame(.keepAlive)])
        }
        #expect(throws: WireError.unexpectedFrame(type: .iterationEnd, state: .established)) {
            try joined([.frame(.iterationEnd(IterationEnd(iteration: 0, pendingBytes: 0, dirtyPages: 0)))])
        }
        #expect(throws: WireError.unexpectedFrame(type: .complete, state: .established)) { try joined([.frame(.complete)]) }
    }

    @Test func streamEndIsRefusedOnStreamZero() {
        var s = StreamBuilder.source(version: .v3)
        s.add(.streamEnd(StreamEnd(streamIndex: 1, frameCount: 1)))
        var decoder = FrameDecoder(peer: .source, version: .v3)
        decoder.feed(s.bytes)
        #expect(throws: WireError.unexpectedFrame(type: .streamEnd, state: .established)) {
            while try decoder.nextMessage() != nil {}
        }
    }

    @Test func theJoinProofIsBoundToItsIndexAndIsNotAResumeProof() {
        let secret = Array(repeating: UInt8(0x11), count: 32), binding = Array(repeating: UInt8(0x22), count: 32)
        let one = ResumeProof.computeJoin(secret: secret, binding: binding, sessionID: testSessionID, streamIndex: 1)
        let two = ResumeProof.computeJoin(secret: secret, binding: binding, sessionID: testSessionID, streamIndex: 2)
        let resume = ResumeProof.compute(secret: secret, binding: binding, role: .source, sessionID: testSessionID)
        #expect(one.count == 32 && one != two && one != resume)
        // The message layout of §14.3, spelled out.
        let message = Array("vfio-migrate join proof".utf8) + [1] + testSessionID + [1, 0, 0, 0] + binding
        #expect(one == ResumeProof.hmacSHA256(key: secret, message: message))
    }

    @Test func routingCutsAtBlocksAndDealsThemRoundRobin() {
        let routing = StreamRouting(count: 3, blockPages: 4)
        let pieces = routing.pieces(start: 2, pages: 11)
        #expect(pieces.map(\.start) == [2, 4, 8, 12] && pieces.map(\.pages) == [2, 4, 4, 1])
        #expect(pieces.map(\.stream) == [0, 1, 2, 0])
        #expect(routing.firstForeignPFN(stream: 1, start: 4, pages: 4) == nil)
        #expect(routing.firstForeignPFN(stream: 1, start: 4, pages: 5) == 8)
        // The last block of the PFN space: no overflow.
        let top = StreamRouting(count: 2, blockPages: 1 << 20)
        #expect(top.pieces(start: .max - 3, pages: 3).map(\.pages) == [3])
        #expect(top.firstForeignPFN(stream: top.stream(of: .max - 3), start: .max - 3, pages: 3) == nil)
    }

    @Test func refuseStreamRefusedRoundTripsAndOlderPeersReadItAsUnspecified() throws {
        let refusal = Refusal(reason: .streamRefused, message: "stream 2 has already joined")
        var decoder = ResumeHandshakeDecoder(peer: .destination, sessionID: testSessionID, version: .v3)
        decoder.feed(try FrameEncoder.frame(.refuse(refusal), sequence: 0))
        #expect(try decoder.next() == .refuse(refusal))
        #expect(RefusalReason(rawValue: 5) == .streamRefused && !RefusalReason.streamRefused.isTransient)
    }
}
