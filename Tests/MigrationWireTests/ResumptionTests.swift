import Testing
@testable import MigrationWire

// Version 2 (docs/PROTOCOL.md §13): one test per rule, with the exact error.

private let proofA = [UInt8](repeating: 0xA5, count: 32)
private let sha0 = [UInt8](repeating: 0, count: 32)
private func raw(_ bytes: [UInt8], phase: Phase = .precopy, part: ChunkPart = .whole) -> FrameBody {
    .deviceData(DeviceData(phase: phase, encoding: .raw, originalLength: UInt32(bytes.count), payload: bytes, part: part))
}
private func ack(_ next: UInt64, _ bytes: [UInt64] = [0, 0]) -> ResumptionBody { .ack(StreamPosition(nextSequence: next, deviceBytes: bytes)) }
private func resume(_ role: Role, session: [UInt8] = testSessionID) -> ResumptionBody {
    .resume(Resume(sessionID: session, role: role, proof: proofA))
}
private func accept(_ progress: DestinationProgress = .receiving, next: UInt64 = 1, at position: UInt64 = 1, bytes: [UInt64] = [0, 0]) -> ResumeAccept {
    ResumeAccept(progress: progress, destinationNextSequence: next, position: StreamPosition(nextSequence: position, deviceBytes: bytes))
}
private func handshakeFrame(_ body: ResumptionBody) -> [UInt8] {
    do { return try FrameEncoder.frame(body, sequence: 0) } catch { fatalError("\(error)") }
}

@Suite struct ResumptionRoundTripTests {
    @Test func everyResumptionBodyRoundTrips() throws {
        var gen = FrameGenerator(seed: 0xACC)
        var seen = Set<FrameType>()
        for i in 0..<2000 {
            let body = gen.resumptionBody()
            let bytes = try FrameEncoder.frame(body, sequence: UInt64(i))
            let header = try FrameHeader.parse(bytes, at: 0, version: .v2)
            #expect(header == FrameHeader(type: body.type, flags: 0, device: 0, payloadLength: bytes.count - 24, sequence: UInt64(i)))
            var reader = ByteReader(bytes, range: 24..<bytes.count, frame: body.type)
            #expect(try ResumptionBody.parsePayload(body.type, &reader, limits: .default) == body, "case \(i)")
            seen.insert(body.type)
        }
        #expect(seen == Set(FrameType.allCases.filter { $0.introduced == .v2 }))
    }

    /// Version 3 (§14.5): positions with the stream tail of a session of 2–5 streams.
    @Test func positionsWithAStreamTailRoundTripInVersion3() throws {
        var gen = FrameGenerator(seed: 0xACD)
        for i in 0..<500 {
            let body = gen.resumptionBody(streams: 2 + i % 4)
            let bytes = try FrameEncoder.frame(body, sequence: UInt64(i))
            var reader = ByteReader(bytes, range: 24..<bytes.count, frame: body.type)
            #expect(try ResumptionBody.parsePayload(body.type, &reader, limits: .default, version: .v3) == body, "case \(i)")
        }
    }

    @Test func handshakeFramesAreUnnumberedAndAckIsNumbered() throws {
        var encoder = FrameEncoder()
        _ = try encoder.encode(.hello(testHello(role: .destination, version: .v2)))
        let greeting = try encoder.encode(resume(.destination))
        #expect(loadLE64(greeting, at: 16) == 0)
        #expect(encoder.nextSequence == 1)
        let a = try encoder.encode(ack(1))
        #expect(loadLE64(a, at: 16) == 1)
        let refusal = try encoder.encode(.refuse(Refusal(reason: .busy, message: "attaching")))
        #expect(loadLE64(refusal, at: 16) == 0)
        #expect(encoder.nextSequence == 2)
        #expect(loadLE64(FrameEncoder.handshakeAbort(Abort(reason: .timeout, message: "gave up")), at: 16) == 0)
    }

    @Test func regeneratedFramesKeepTheirOriginalSequence() throws {
        var encoder = FrameEncoder()
        for _ in 0..<5 { _ = try encoder.encode(.keepAlive) }
        let pages = FrameBody.pages(Pages(pageSize: 4096, segments: [PageSegment(startPFN: 7, pageCount: 1, encoding: .zero, payload: [])]))
        let again = try encoder.regenerated(pages, sequence: 3)
        #expect(loadLE64(again, at: 16) == 3)
        #expect(again == FrameEncoder.serialize(pages, device: 0, sequence: 3))
        #expect(encoder.nextSequence == 5)
    }

    @Test func refusalReadsLikeAbort() throws {
        let bytes = handshakeFrame(.refuse(Refusal(reason: .badProof, message: String(repeating: "é", count: 600))))
        var reader = ByteReader(bytes, range: 24..<bytes.count, frame: .refuse)
        guard case .refuse(let r) = try ResumptionBody.parsePayload(.refuse, &reader, limits: .default) else { Issue.record("not REFUSE"); return }
        #expect(r.reason == .badProof && r.message == String(repeating: "é", count: 512))
        let unknown: [UInt8] = [0x63, 0x00, 0x01, 0x00, 0x41]
        var r2 = ByteReader(unknown, range: 0..<unknown.count, frame: .refuse)
        #expect(try ResumptionBody.parsePayload(.refuse, &r2, limits: .default) == .refuse(Refusal(reason: .unspecified, message: "A")))
        #expect(RefusalReason.busy.isTransient && !RefusalReason.badProof.isTransient && !RefusalReason.unknownSession.isTransient)
    }
}

@Suite struct VersionGateTests {
    /// §10: a version-1 decoder knows none of the version-2 codes; nothing of v1 changes.
    @Test func versionOneDecodersRejectVersionTwoTypesAsUnknown() {
        for type in FrameType.allCases where type.introduced == .v2 {
            var d = StreamBuilder.destination()
            d.bytes += rawFrame(type: type.rawValue, sequence: 1, payload: [])
            #expect(throws: WireError.unknownFrameType(type.rawValue)) { try decodeAll(d.bytes, peer: .destination) }
        }
        #expect(throws: WireError.unknownFrameType(17)) {
            try decodeMessages(StreamBuilder.destination(version: .v2).bytes + rawFrame(type: 17, sequence: 1, payload: []), peer: .destination)
        }
    }

    @Test func helloMustCarryTheNegotiatedVersion() throws {
        #expect(try decodeMessages(StreamBuilder.source(version: .v2).bytes, peer: .source).count == 1)
        #expect(throws: WireError.unsupportedVersion(1, supported: 2)) { try decodeMessages(StreamBuilder.source().bytes, peer: .source) }
        #expect(throws: WireError.unsupportedVersion(2, supported: 1)) { try decodeAll(StreamBuilder.source(version: .v2).bytes) }
    }

    @Test func alpnNegotiation() {
        let both: Set<ProtocolVersion> = [.v1, .v2]
        #expect(ProtocolVersion.alpnOffer(speaking: both) == ["vfio-migrate/2"])
        #expect(ProtocolVersion.alpnOffer(speaking: [.v1]) == [])
        #expect(ProtocolVersion.select(offered: ["vfio-migrate/2"], speaking: both) == .v2)
        #expect(ProtocolVersion.select(offered: ["vfio-migrate/2"], speaking: [.v1]) == nil)
        #expect(ProtocolVersion.select(offered: ["vfio-migrate/9", "h2"], speaking: both) == nil)
        #expect(ProtocolVersion.select(offered: [], speaking: both) == nil)
        #expect(ProtocolVersion.negotiated(alpn: nil, offered: ["vfio-migrate/2"]) == .v1)
        #expect(ProtocolVersion.negotiated(alpn: "vfio-migrate/2", offered: ["vfio-migrate/2"]) == .v2)
        #expect(ProtocolVersion.negotiated(alpn: "vfio-migrate/2", offered: []) == nil)
        #expect(ProtocolVersion.negotiated(alpn: "h2", offered: ["h2"]) == nil)
    }
}

@Suite struct AckRuleTests {
    @Test func ackMayFollowHelloAndReadyOnly() throws {
        var d = StreamBuilder.destination(version: .v2)
        d.add(ack(1))
        d.add(.keepAlive)
        d.add(ack(5, [3, 0]))
        d.add(.ready)
        d.add(ack(9, [3, 4]))
        d.add(.resumed)
        let messages = try decodeMessages(d.bytes, peer: .destination)
        #expect(messages.count == 7)
        #expect(messages[5] == .resumption(ResumptionFrame(sequence: 5, body: ack(9, [3, 4]))))

        var after = d
        after.add(ack(9, [3, 4]))
        #expect(throws: WireError.unexpectedFrame(type: .ack, state: .resumed)) { try decodeMessages(after.bytes, peer: .destination) }
        let first = FrameEncoder.serialize(.keepAlive, device: 0, sequence: 0)
        var early = StreamBuilder()
        early.bytes = (try? FrameEncoder.frame(ack(1), sequence: 0)) ?? first
        #expect(throws: WireError.unexpectedFrame(type: .ack, state: .awaitingHello)) { try decodeMessages(early.bytes, peer: .destination) }
        var aborted = StreamBuilder.destination(version: .v2)
        aborted.add(.abort(Abort(reason: .cancelled, message: "x")))
        aborted.add(ack(1))
        #expect(throws: WireError.unexpectedFrame(type: .ack, state: .aborted)) { try decodeMessages(aborted.bytes, peer: .destination) }
    }

    @Test func onlyTheDestinationAcknowledges() {
        var s = StreamBuilder.source(version: .v2)
        s.add(ack(1))
        #expect(throws: WireError.wrongRole(frame: .ack, sender: .source)) { try decodeMessages(s.bytes, peer: .source) }
    }

    @Test func ackNamesEveryAnnouncedDevice() {
        var d = StreamBuilder.destination(version: .v2)
        d.add(ack(1, [0]))
        #expect(throws: WireError.positionDeviceCount(frame: .ack, declared: 1, announced: 2)) { try decodeMessages(d.bytes, peer: .destination) }
    }

    @Test func ackNeverGoesBack() {
        var seq = StreamBuilder.destination(version: .v2)
        seq.add(ack(7, [5, 5]))
        seq.add(ack(6, [5, 5]))
        #expect(throws: WireError.positionRegressed(frame: .ack, field: "next sequence", previous: 7, got: 6)) { try decodeMessages(seq.bytes, peer: .destination) }
        var bytes = StreamBuilder.destination(version: .v2)
        bytes.add(ack(7, [5, 5]))
        bytes.add(ack(7, [5, 4]))
        #expect(throws: WireError.positionRegressed(frame: .ack, field: "device #1 bytes", previous: 5, got: 4)) { try decodeMessages(bytes.bytes, peer: .destination) }
    }

    @Test func malformedAckPayloads() {
        func withPayload(_ payload: [UInt8]) -> [UInt8] {
            StreamBuilder.destination(version: .v2).bytes + rawFrame(type: FrameType.ack.rawValue, sequence: 1, payload: payload)
        }
        var zero = payloadBytes(ack(1))
        zero[0] = 0
        #expect(throws: WireError.invalidValue(frame: .ack, field: "next sequence (HELLO is always received)", value: 0)) {
            try decodeMessages(withPayload(zero), peer: .destination)
        }
        var count = payloadBytes(ack(1))
        count[8] = 3
        #expect(throws: WireError.countExceedsPayload(frame: .ack, field: "device count", count: 3, remainingBytes: 16)) {
            try decodeMessages(withPayload(count), peer: .destination)
        }
        #expect(throws: WireError.trailingBytes(frame: .ack, count: 1)) { try decodeMessages(withPayload(payloadBytes(ack(1)) + [0]), peer: .destination) }
        var reserved = payloadBytes(ack(1))
        reserved[13] = 1
        #expect(throws: WireError.invalidValue(frame: .ack, field: "reserved", value: 1)) { try decodeMessages(withPayload(reserved), peer: .destination) }
        #expect(throws: WireError.truncated(frame: .ack, field: "reserved")) { try decodeMessages(withPayload(Array(payloadBytes(ack(1)).prefix(13))), peer: .destination) }
        let device = StreamBuilder.destination(version: .v2).bytes + rawFrame(type: FrameType.ack.rawValue, device: 1, sequence: 1, payload: payloadBytes(ack(1)))
        #expect(throws: WireError.unexpectedDeviceIndex(frame: .ack, index: 1)) { try decodeMessages(device, peer: .destination) }
    }

    /// The handshake frames belong to a new connection's handshake, never to the stream.
    @Test func handshakeFramesAreRefusedInTheStream() {
        var s = StreamBuilder.source(version: .v2)
        s.bytes += handshakeFrame(resume(.source))
        #expect(throws: WireError.sequenceReplay(expected: 1, got: 0)) { try decodeMessages(s.bytes, peer: .source) }
        for body in [resume(.source), .refuse(Refusal(reason: .busy, message: ""))] {
            var numbered = StreamBuilder.source(version: .v2)
            numbered.bytes += (try? FrameEncoder.frame(body, sequence: 1)) ?? []
            #expect(throws: WireError.unexpectedFrame(type: body.type, state: .established)) { try decodeMessages(numbered.bytes, peer: .source) }
        }
        var d = StreamBuilder.destination(version: .v2)
        d.bytes += (try? FrameEncoder.frame(.resumeAccept(accept()), sequence: 1)) ?? []
        #expect(throws: WireError.unexpectedFrame(type: .resumeAccept, state: .established)) { try decodeMessages(d.bytes, peer: .destination) }
    }
}

@Suite struct StreamPositionTests {
    @Test func positionCountsDecodedDeviceBytesOfEveryPiece() throws {
        var s = StreamBuilder.source(version: .v2)
        s.add(raw([1, 2, 3]), device: 0)
        s.add(raw([1, 2], part: .first(chunkLength: 5)), device: 1)
        s.add(.keepAlive)
        s.add(raw([3, 4, 5], part: .next), device: 1)
        s.add(.deviceData(DeviceData(phase: .precopy, encoding: .deflate, originalLength: 4096, payload: [0x63, 0x18, 0x05, 0x00])), device: 0)
        var decoder = FrameDecoder(peer: .source, version: .v2)
        decoder.feed(s.bytes)
        while try decoder.nextMessage() != nil {}
        #expect(decoder.position == StreamPosition(nextSequence: 6, deviceBytes: [3 + 4096, 5]))
    }
}

@Suite struct SessionResumeTests {
    /// The destination loses the connection mid-chunk and half-way through a frame;
    /// the source resends from the resume point on a new connection.
    @Test func destinationResumesMidChunkAfterDroppingAPartialFrame() throws {
        var s = StreamBuilder.source(version: .v2)
        s.add(raw([1, 2], part: .first(chunkLength: 6)), device: 0)
        s.add(raw([3, 4], part: .next), device: 0)
        s.add(raw([5, 6], part: .next), device: 0)
        s.add(.keepAlive)
        var decoder = FrameDecoder(peer: .source, version: .v2)
        decoder.feed(Array(s.bytes.prefix(s.offsets[3] + 30)))  // frame 3 only in part
        var seen = 0
        while try decoder.nextMessage() != nil { seen += 1 }
        #expect(seen == 3)
        let position = decoder.suspend()
        #expect(position == StreamPosition(nextSequence: 3, deviceBytes: [4, 0]))
        #expect(decoder.bufferedByteCount == 0 && decoder.isSuspended)

        var handshake = ResumeHandshakeDecoder(peer: .source, sessionID: testSessionID)
        handshake.feed(handshakeFrame(resume(.source)))
        #expect(try handshake.next() == .resume(Resume(sessionID: testSessionID, role: .source, proof: proofA)))
        #expect(handshake.step == .finished)
        #expect(try handshake.next() == nil)

        decoder.resume()
        decoder.feed(Array(s.bytes[s.offsets[3]...]))  // replay from the resume point
        var replayed: [WireMessage] = []
        while let m = try decoder.nextMessage() { replayed.append(m) }
        #expect(replayed == [.frame(s.frames[3]), .frame(s.frames[4])])
        #expect(decoder.position == StreamPosition(nextSequence: 5, deviceBytes: [6, 0]))
        s.finishDevices(2)
        decoder.feed(Array(s.bytes[s.offsets[5]...]))
        while try decoder.nextMessage() != nil {}
        #expect(decoder.state == .complete)
    }

    @Test func replayMustStartExactlyAtTheResumePoint() throws {
        var s = StreamBuilder.source(version: .v2)
        for _ in 0..<3 { s.add(.keepAlive) }
        func resumed() throws -> FrameDecoder {
            var d = FrameDecoder(peer: .source, version: .v2)
            d.feed(Array(s.bytes.prefix(s.offsets[2])))
            while try d.nextMessage() != nil {}
            d.suspend()
            d.resume()
            return d
        }
        var early = try resumed()
        early.feed(Array(s.bytes[s.offsets[1]...]))
        #expect(throws: WireError.sequenceReplay(expected: 2, got: 1)) { try early.nextMessage() }
        var late = try resumed()
        late.feed(Array(s.bytes[s.offsets[3]...]))
        #expect(throws: WireError.sequenceGap(expected: 2, got: 3)) { try late.nextMessage() }
        var zero = try resumed()
        zero.feed(FrameEncoder.serialize(.keepAlive, device: 0, sequence: 0))
        #expect(throws: WireError.sequenceReplay(expected: 2, got: 0)) { try zero.nextMessage() }
    }

    /// §13.5: the source may still give up before its first numbered frame.
    @Test func unnumberedAbortBeforeTheFirstNumberedFrame() throws {
        var s = StreamBuilder.source(version: .v2)
        s.add(.keepAlive)
        var d = FrameDecoder(peer: .source, version: .v2)
        d.feed(s.bytes)
        while try d.nextMessage() != nil {}
        d.suspend()
        d.resume()
        d.feed(FrameEncoder.handshakeAbort(Abort(reason: .timeout, message: "reconnect timeout")))
        #expect(try d.nextMessage() == .frame(Frame(sequence: 0, body: .abort(Abort(reason: .timeout, message: "reconnect timeout")))))
        #expect(d.state == .aborted)

        // Once the stream runs again, ABORT is numbered like everything else.
        var n = FrameDecoder(peer: .source, version: .v2)
        n.feed(s.bytes)
        while try n.nextMessage() != nil {}
        n.suspend()
        n.resume()
        n.feed(FrameEncoder.serialize(.keepAlive, device: 0, sequence: 2) + FrameEncoder.handshakeAbort(Abort(reason: .timeout, message: "")))
        _ = try n.nextMessage()
        #expect(throws: WireError.sequenceReplay(expected: 3, got: 0)) { try n.nextMessage() }
    }

    /// Source side: the destination's frames continue at its next sequence, in the
    /// state RESUME_ACCEPT reports.
    @Test func sourceContinuesTheDestinationsStreamFromTheAccept() throws {
        var d = StreamBuilder.destination(version: .v2)
        d.add(ack(3, [1, 0]))
        var decoder = FrameDecoder(peer: .destination, version: .v2)
        decoder.feed(d.bytes)
        while try decoder.nextMessage() != nil {}
        decoder.suspend()
        try decoder.resume(with: accept(.ready, next: 4, at: 9, bytes: [5, 2]))
        #expect(decoder.state == .ready)
        #expect(decoder.acknowledged == StreamPosition(nextSequence: 9, deviceBytes: [5, 2]))
        decoder.feed(FrameEncoder.serialize(.resumed, device: 0, sequence: 4))
        #expect(try decoder.nextMessage() == .frame(Frame(sequence: 4, body: .resumed)))

        var done = FrameDecoder(peer: .destination, version: .v2)
        done.feed(d.bytes)
        while try done.nextMessage() != nil {}
        done.suspend()
        try done.resume(with: accept(.resumed, next: 2, at: 12, bytes: [1, 0]))
        #expect(done.state == .resumed)
        done.feed(FrameEncoder.serialize(.ready, device: 0, sequence: 2))
        #expect(throws: WireError.unexpectedFrame(type: .ready, state: .resumed)) { try done.nextMessage() }
    }

    @Test func acceptMustNotGoBack() throws {
        func suspended(_ build: (inout StreamBuilder) -> Void) throws -> FrameDecoder {
            var d = StreamBuilder.destination(version: .v2)
            build(&d)
            var decoder = FrameDecoder(peer: .destination, version: .v2)
            decoder.feed(d.bytes)
            while try decoder.nextMessage() != nil {}
            decoder.suspend()
            return decoder
        }
        var sequence = try suspended { $0.add(.keepAlive); $0.add(.keepAlive) }
        #expect(throws: WireError.destinationSequenceRegressed(expected: 3, got: 2)) { try sequence.resume(with: accept(next: 2)) }
        var progress = try suspended { $0.add(.ready) }
        #expect(throws: WireError.destinationProgressRegressed(previous: .ready, got: .receiving)) { try progress.resume(with: accept(.receiving, next: 2)) }
        var position = try suspended { $0.add(ack(8, [4, 4])) }
        #expect(throws: WireError.positionRegressed(frame: .resumeAccept, field: "next sequence", previous: 8, got: 7)) {
            try position.resume(with: accept(next: 2, at: 7, bytes: [4, 4]))
        }
        var devices = try suspended { _ in }
        #expect(throws: WireError.positionDeviceCount(frame: .resumeAccept, declared: 1, announced: 2)) {
            try devices.resume(with: accept(at: 1, bytes: [0]))
        }
    }
}

@Suite struct ResumeHandshakeTests {
    @Test func sourceReadsResumeThenAcceptAndKeepsWhatFollows() throws {
        var h = ResumeHandshakeDecoder(peer: .destination, sessionID: testSessionID)
        let trailing = FrameEncoder.serialize(.keepAlive, device: 0, sequence: 4)
        let bytes = handshakeFrame(resume(.destination)) + handshakeFrame(.resumeAccept(accept(next: 4))) + trailing
        for b in bytes { h.feed([b]) }  // byte by byte
        #expect(try h.next() == .resume(Resume(sessionID: testSessionID, role: .destination, proof: proofA)))
        #expect(h.step == .awaitingAccept)
        #expect(try h.next() == .resumeAccept(accept(next: 4)))
        #expect(h.step == .finished)
        #expect(try h.next() == nil)
        #expect(h.takeRemainingBytes() == trailing)
    }

    @Test func destinationGreetingWithHelloMeansTheSessionIsNotHeld() throws {
        var h = ResumeHandshakeDecoder(peer: .destination, sessionID: testSessionID)
        h.feed(StreamBuilder.destination(version: .v2).bytes)
        #expect(try h.next() == .hello(testHello(role: .destination, version: .v2)))
        #expect(h.step == .closed)
        h.feed(FrameEncoder.serialize(.keepAlive, device: 0, sequence: 1))
        #expect(try h.next() == nil)
    }

    @Test func refusalsAndAbortsCloseTheHandshake() throws {
        for first in [handshakeFrame(.refuse(Refusal(reason: .wrongIdentity, message: "CN=other"))),
                      FrameEncoder.handshakeAbort(Abort(reason: .protocolError, message: "session ended"))] {
            var h = ResumeHandshakeDecoder(peer: .destination, sessionID: testSessionID)
            h.feed(first)
            #expect(try h.next() != nil)
            #expect(h.step == .closed)
        }
        var late = ResumeHandshakeDecoder(peer: .destination, sessionID: testSessionID)
        late.feed(handshakeFrame(resume(.destination)) + handshakeFrame(.refuse(Refusal(reason: .busy, message: ""))))
        _ = try late.next()
        #expect(try late.next() == .refuse(Refusal(reason: .busy, message: "")))
        var source = ResumeHandshakeDecoder(peer: .source, sessionID: testSessionID)
        source.feed(handshakeFrame(.refuse(Refusal(reason: .badProof, message: ""))))
        #expect(try source.next() == .refuse(Refusal(reason: .badProof, message: "")))
        #expect(source.step == .closed)
    }

    @Test func framesOutOfHandshakeOrderAreRejected() {
        func first(_ bytes: [UInt8], peer: Role = .destination) throws {
            var h = ResumeHandshakeDecoder(peer: peer, sessionID: testSessionID)
            h.feed(bytes)
            while try h.next() != nil {}
        }
        #expect(throws: WireError.unexpectedHandshakeFrame(type: .resumeAccept, step: .awaitingResume)) { try first(handshakeFrame(.resumeAccept(accept()))) }
        #expect(throws: WireError.unexpectedHandshakeFrame(type: .keepAlive, step: .awaitingResume)) { try first(FrameEncoder.serialize(.keepAlive, device: 0, sequence: 0)) }
        #expect(throws: WireError.unexpectedHandshakeFrame(type: .ack, step: .awaitingResume)) { try first(handshakeFrame(ack(1))) }
        #expect(throws: WireError.unexpectedHandshakeFrame(type: .resume, step: .awaitingAccept)) {
            try first(handshakeFrame(resume(.destination)) + handshakeFrame(resume(.destination)))
        }
        #expect(throws: WireError.unexpectedHandshakeFrame(type: .hello, step: .awaitingResume)) { try first(StreamBuilder.source(version: .v2).bytes, peer: .source) }
        #expect(throws: WireError.wrongRole(frame: .resumeAccept, sender: .source)) { try first(handshakeFrame(.resumeAccept(accept())), peer: .source) }
        #expect(throws: WireError.unexpectedRole(expected: .destination, got: .source)) { try first(handshakeFrame(resume(.source))) }
        #expect(throws: WireError.sessionMismatch(frame: .resume)) { try first(handshakeFrame(resume(.destination, session: Array(0..<16)))) }
        #expect(throws: WireError.unsupportedVersion(1, supported: 2)) { try first(StreamBuilder.destination().bytes) }
    }

    @Test func handshakeFramesMustBeUnnumberedAndWellFormed() {
        func first(_ bytes: [UInt8]) throws {
            var h = ResumeHandshakeDecoder(peer: .destination, sessionID: testSessionID)
            h.feed(bytes)
            while try h.next() != nil {}
        }
        #expect(throws: WireError.handshakeFrameNumbered(frame: .resume, sequence: 7)) { try first((try? FrameEncoder.frame(resume(.destination), sequence: 7)) ?? []) }
        let payload = payloadBytes(resume(.destination))
        #expect(throws: WireError.invalidPayloadLength(frame: .resume, expected: 56, actual: 55)) {
            try first(rawFrame(type: FrameType.resume.rawValue, sequence: 0, payload: Array(payload.prefix(55))))
        }
        var reserved = payload
        reserved[20] = 9
        #expect(throws: WireError.invalidValue(frame: .resume, field: "reserved", value: 9)) { try first(rawFrame(type: FrameType.resume.rawValue, sequence: 0, payload: reserved)) }
        var role = payload
        role[16] = 0
        #expect(throws: WireError.invalidValue(frame: .resume, field: "role", value: 0)) { try first(rawFrame(type: FrameType.resume.rawValue, sequence: 0, payload: role)) }
        #expect(throws: WireError.unexpectedDeviceIndex(frame: .resume, index: 2)) { try first(rawFrame(type: FrameType.resume.rawValue, device: 2, sequence: 0, payload: payload)) }
        #expect(throws: WireError.payloadTooLarge(frame: .refuse, declared: 1 << 30, limit: 16 << 20)) {
            try first(rawFrame(type: FrameType.refuse.rawValue, sequence: 0, payload: [], length: 1 << 30))
        }
        var state = payloadBytes(.resumeAccept(accept()))
        state[0] = 4
        #expect(throws: WireError.invalidValue(frame: .resumeAccept, field: "destination state", value: 4)) {
            try first(handshakeFrame(resume(.destination)) + rawFrame(type: FrameType.resumeAccept.rawValue, sequence: 0, payload: state))
        }
    }

    @Test func errorsAreSticky() throws {
        var h = ResumeHandshakeDecoder(peer: .destination, sessionID: testSessionID)
        h.feed(FrameEncoder.serialize(.keepAlive, device: 0, sequence: 0))
        #expect(throws: WireError.unexpectedHandshakeFrame(type: .keepAlive, step: .awaitingResume)) { try h.next() }
        h.feed(handshakeFrame(resume(.destination)))
        #expect(throws: WireError.unexpectedHandshakeFrame(type: .keepAlive, step: .awaitingResume)) { try h.next() }
    }
}

@Suite struct ResumeProofTests {
    /// RFC 4231 test case 2 (a key shorter than the block) and 6 (a key longer than it).
    @Test func hmacMatchesRFC4231() {
        let mac = ResumeProof.hmacSHA256(key: Array("Jefe".utf8), message: Array("what do ya want for nothing?".utf8))
        #expect(ProtocolDocTests.hexdump(mac) == "0000  5b dc c1 46 bf 60 75 4e 6a 04 24 26 08 95 75 c7\n0010  5a 00 3f 08 9d 27 39 83 9d ec 58 b9 64 ec 38 43")
        let long = ResumeProof.hmacSHA256(key: [UInt8](repeating: 0xaa, count: 131),
                                          message: Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8))
        #expect(long.prefix(4) == [0x60, 0xe4, 0x31, 0x59] && long.suffix(4) == [0x0e, 0xe3, 0x7f, 0x54])
    }

    @Test func proofDependsOnRoleBindingSecretAndSession() {
        let secret = [UInt8](repeating: 0x11, count: 32), binding = [UInt8](repeating: 0x22, count: 32)
        let source = ResumeProof.compute(secret: secret, binding: binding, role: .source, sessionID: testSessionID)
        #expect(source.count == 32)
        #expect(source != ResumeProof.compute(secret: secret, binding: binding, role: .destination, sessionID: testSessionID))
        #expect(source != ResumeProof.compute(secret: secret, binding: [UInt8](repeating: 0x23, count: 32), role: .source, sessionID: testSessionID))
        #expect(source != ResumeProof.compute(secret: [UInt8](repeating: 0x12, count: 32), binding: binding, role: .source, sessionID: testSessionID))
        #expect(source != ResumeProof.compute(secret: secret, binding: binding, role: .source, sessionID: Array(0..<16)))
        #expect(ResumeProof.matches(source, source))
        #expect(!ResumeProof.matches(source, Array(source.dropLast()) + [source.last! ^ 1]))
        #expect(!ResumeProof.matches(source, Array(source.dropLast())))
    }
}
