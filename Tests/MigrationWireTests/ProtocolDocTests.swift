import Foundation
import Testing
@testable import MigrationWire

/// docs/PROTOCOL.md's worked examples are the encoder's exact output: this test
/// fails when either changes without the other. To regenerate the hex blocks after
/// a deliberate change: WIRE_UPDATE_DOC_EXAMPLES=1 swift test --filter ProtocolDocTests
@Suite struct ProtocolDocTests {
    static let docURL = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("docs/PROTOCOL.md")

    /// A fixed raw-deflate stream of one 4 KiB page of 0xAB (literal so a zlib upgrade cannot change the example).
    static let deflatedPage: [UInt8] = [0xed, 0xc1, 0x01, 0x0d, 0x00, 0x00, 0x00, 0xc2, 0xa0, 0xfe, 0x59, 0x5e, 0xd2,
                                        0x1e, 0x0e, 0x28, 0x00, 0x00, 0x00, 0xe0, 0xdd, 0x00]

    static func examples() -> [(id: String, bytes: [UInt8])] {
        let hello = Hello(sessionID: Array(0x00...0x0f), role: .destination, encodings: [.raw, .deflate],
                          devices: [DeviceDescriptor(name: "gpu0", pageSize: 4096, compatibility: "10de:1eb8/v2")],
                          memory: [MemoryRange(startPFN: 0, pageCount: 0x40000, pageSize: 4096)])
        let pages = Pages(pageSize: 4096, segments: [
            PageSegment(startPFN: 0x100, pageCount: 2, encoding: .zero, payload: []),
            PageSegment(startPFN: 0x102, pageCount: 1, encoding: .deflate, payload: deflatedPage),
        ])
        return [
            ("hello", FrameEncoder.serialize(.hello(hello), device: 0, sequence: 0)),
            ("pages", FrameEncoder.serialize(.pages(pages), device: 0, sequence: 5)),
            ("device-data", FrameEncoder.serialize(.deviceData(DeviceData(phase: .stopcopy, encoding: .raw, originalLength: 6,
                                                                            payload: Array("state!".utf8))), device: 1, sequence: 6)),
            ("device-data-first", FrameEncoder.serialize(.deviceData(DeviceData(phase: .stopcopy, encoding: .raw, originalLength: 4,
                                                                                  payload: Array("big!".utf8), part: .first(chunkLength: 0x0140_0000))),
                                                         device: 0, sequence: 7)),
            ("device-data-next", FrameEncoder.serialize(.deviceData(DeviceData(phase: .stopcopy, encoding: .raw, originalLength: 2,
                                                                                 payload: Array("..".utf8), part: .next)), device: 0, sequence: 8)),
            ("commit", FrameEncoder.serialize(.commit, device: 0, sequence: 9)),
        ] + versionTwoExamples() + versionThreeExamples() + versionFourExamples() + versionFiveExamples() + versionSixExamples()
    }

    /// §17.7: the destination HELLO of §11 in version 6 with the reference's default
    /// encodings (page copies among them; S = 16, L = 4), and a PAGES frame with one copy
    /// segment: PFNs 0x3000…0x3003 take the bytes of 0x1200…0x1203.
    static func versionSixExamples() -> [(id: String, bytes: [UInt8])] {
        let hello = Hello(version: 6, sessionID: Array(UInt8(0x00)...0x0f), role: .destination,
                          encodings: [.raw, .deflate, .zstd, .zstdLanes, .xxh3Digest, .pageCopies],
                          devices: [DeviceDescriptor(name: "gpu0", pageSize: 4096, compatibility: "10de:1eb8/v2")],
                          memory: [MemoryRange(startPFN: 0, pageCount: 0x40000, pageSize: 4096)],
                          streams: StreamOffer(count: 16, blockPages: 0, lanes: 4))
        let pages = Pages(pageSize: 4096, segments: [PageSegment.copy(startPFN: 0x3000, pageCount: 4, from: 0x1200)])
        return [
            ("hello-v6", FrameEncoder.serialize(.hello(hello), device: 0, sequence: 0)),
            ("pages-copy", FrameEncoder.serialize(.pages(pages), device: 0, sequence: 7)),
        ]
    }

    /// The bytes of the hex block after `<!-- example:ID -->`, as the document writes them.
    static func documentedBytes(_ id: String) throws -> [UInt8] {
        let doc = try String(contentsOf: docURL, encoding: .utf8)
        let range = try #require(blockRange(id, in: doc), "example \(id) missing from PROTOCOL.md")
        return try doc[range].split(separator: "\n").flatMap { line in
            try line.split(separator: " ").dropFirst().map { try #require(UInt8($0, radix: 16), "not a hex byte: \($0)") }
        }
    }

    /// §17.7's HELLO, read from the document: a version-6 destination's, listing page
    /// copies, with the tail the text gives. A version-5 receiver refuses it for its
    /// version, and, with the version bytes made `05 00`, for encoding 5.
    @Test func theVersionSixHelloDecodes() throws {
        let bytes = try Self.documentedBytes("hello-v6")
        var decoder = FrameDecoder(peer: .destination, version: .v6)
        decoder.feed(bytes)
        guard case .frame(let frame)? = try decoder.nextMessage(), case .hello(let hello) = frame.body else { Issue.record("not a HELLO"); return }
        #expect(hello.version == 6 && hello.role == .destination && hello.sessionID == Array(UInt8(0x00)...0x0f))
        #expect(hello.encodings == [.raw, .deflate, .zstd, .zstdLanes, .xxh3Digest, .pageCopies])
        #expect(hello.streams == StreamOffer(count: 16, blockPages: 0, lanes: 4))
        #expect(hello.memory == [MemoryRange(startPFN: 0, pageCount: 0x40000, pageSize: 4096)])

        var v5 = FrameDecoder(peer: .destination, version: .v5)
        v5.feed(bytes)
        #expect(throws: WireError.unsupportedVersion(6, supported: 5)) { try v5.nextMessage() }
        var relabelled = bytes
        #expect(relabelled[0x20...0x21] == [0x06, 0x00], "the version field sits where §11 puts it")
        relabelled[0x20] = 0x05
        var older = FrameDecoder(peer: .destination, version: .v5)
        older.feed(relabelled)
        #expect(throws: WireError.unknownEncoding(frame: .hello, value: 5)) { try older.nextMessage() }
    }

    /// A version-6 source's HELLO (one stream) with §11's memory, numbered 0, then
    /// KEEPALIVEs up to `before`: the stream a PAGES frame numbered `before` continues.
    static func sourceStream(listing encodings: [Encoding], before sequence: UInt64) -> [UInt8] {
        let hello = Hello(version: 6, sessionID: Array(UInt8(0x00)...0x0f), role: .source, encodings: encodings,
                          devices: [DeviceDescriptor(name: "gpu0", pageSize: 4096, compatibility: "10de:1eb8/v2")],
                          memory: [MemoryRange(startPFN: 0, pageCount: 0x40000, pageSize: 4096)],
                          streams: StreamOffer(count: 1, blockPages: 256, lanes: 0))
        return FrameEncoder.serialize(.hello(hello), device: 0, sequence: 0)
            + (1..<sequence).flatMap { FrameEncoder.serialize(.keepAlive, device: 0, sequence: $0) }
    }

    /// §17.7's PAGES frame, read from the document, decodes in a version-6 session to the
    /// copy segment its text describes; refused when the source's HELLO did not list 5.
    @Test func thePageCopyExampleDecodes() throws {
        let bytes = try Self.documentedBytes("pages-copy")
        var decoder = FrameDecoder(peer: .source, version: .v6)
        decoder.feed(Self.sourceStream(listing: [.raw, .deflate, .pageCopies], before: 7) + bytes)
        var last: Frame?
        while case .frame(let frame)? = try decoder.nextMessage() { last = frame }
        let frame = try #require(last)
        guard case .pages(let pages) = frame.body else { Issue.record("not PAGES"); return }
        #expect(frame.sequence == 7 && pages.pageSize == 4096 && pages.segments.count == 1)
        let segment = try #require(pages.segments.first)
        #expect(segment.startPFN == 0x3000 && segment.pageCount == 4 && segment.encoding == .copy && segment.lane == 0)
        #expect(segment.copySourcePFN == 0x1200)

        var unannounced = FrameDecoder(peer: .source, version: .v6)
        unannounced.feed(Self.sourceStream(listing: [.raw, .deflate], before: 7) + bytes)
        #expect(throws: WireError.encodingNotAnnounced(frame: .pages, encoding: "pageCopies")) {
            while try unannounced.nextMessage() != nil {}
        }
    }

    /// §16.4: the source HELLO of a version-5 session listing raw, deflate and the
    /// XXH3-128 digest (one stream, no lanes), and a DEVICE_END for a device whose whole
    /// stream was the 3 bytes "abc": XXH3-128("abc") in its canonical form, then 16 zero bytes.
    static func versionFiveExamples() -> [(id: String, bytes: [UInt8])] {
        let hello = Hello(version: 5, sessionID: Array(UInt8(0x00)...0x0f), role: .source, encodings: [.raw, .deflate, .xxh3Digest],
                          devices: [DeviceDescriptor(name: "gpu0", pageSize: 4096, compatibility: "10de:1eb8/v2")],
                          memory: [MemoryRange(startPFN: 0, pageCount: 0x40000, pageSize: 4096)],
                          streams: StreamOffer(count: 1, blockPages: 256, lanes: 0))
        let end = DeviceEnd(totalBytes: 3, chunkCount: 1, sha256: DeviceDigest.field(Array("abc".utf8), .xxh3))
        return [
            ("hello-v5", FrameEncoder.serialize(.hello(hello), device: 0, sequence: 0)),
            ("device-end-xxh3", FrameEncoder.serialize(.deviceEnd(end), device: 0, sequence: 9)),
        ]
    }

    /// §15.6: a lane segment's payload, the first of its lane: a zstd frame header (no
    /// content size, window 2^24) and an RLE block of 4096 × `ab` that is not the last
    /// one (the frame stays open for the lane's next segment). Hand-built, so the bytes
    /// do not depend on libzstd's version.
    static let lanePayload: [UInt8] = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x70, 0x02, 0x80, 0x00, 0xab]

    /// §15.6: the destination HELLO of §11 in version 4 (S = 8, L = 4, zstd and zstd
    /// lanes listed) and a PAGES frame with one lane segment on lane 1.
    static func versionFourExamples() -> [(id: String, bytes: [UInt8])] {
        let hello = Hello(version: 4, sessionID: Array(UInt8(0x00)...0x0f), role: .destination, encodings: [.raw, .deflate, .zstd, .zstdLanes],
                          devices: [DeviceDescriptor(name: "gpu0", pageSize: 4096, compatibility: "10de:1eb8/v2")],
                          memory: [MemoryRange(startPFN: 0, pageCount: 0x40000, pageSize: 4096)],
                          streams: StreamOffer(count: 8, blockPages: 0, lanes: 4))
        let pages = Pages(pageSize: 4096, segments: [PageSegment(startPFN: 0x102, pageCount: 1, encoding: .zstdLane, payload: lanePayload, lane: 1)])
        return [
            ("hello-v4", FrameEncoder.serialize(.hello(hello), device: 0, sequence: 0)),
            ("pages-lane", FrameEncoder.serialize(.pages(pages), device: 0, sequence: 5)),
        ]
    }

    /// §16.4: the version-5 HELLO reads back as a source's, and the DEVICE_END's field
    /// is XXH3-128("abc") and 16 zero bytes.
    @Test func theVersionFiveExamplesDecode() throws {
        let bytes = Dictionary(uniqueKeysWithValues: Self.examples().map { ($0.id, $0.bytes) })
        var decoder = FrameDecoder(peer: .source, version: .v5)
        decoder.feed(try #require(bytes["hello-v5"]))
        guard case .frame(let frame)? = try decoder.nextMessage(), case .hello(let hello) = frame.body else { Issue.record("not a HELLO"); return }
        #expect(hello.encodings == [.raw, .deflate, .xxh3Digest] && hello.streams?.lanes == 0)
        var reader = ByteReader(try #require(bytes["device-end-xxh3"]), range: 24..<72, frame: .deviceEnd)
        guard case .deviceEnd(let end) = try FrameBody.parsePayload(.deviceEnd, &reader, limits: .default) else { Issue.record("not DEVICE_END"); return }
        // The published value, not our own function's output.
        #expect(end.sha256 == [0x06, 0xb0, 0x5a, 0xb6, 0x73, 0x3a, 0x61, 0x85, 0x78, 0xaf, 0x5f, 0x94, 0x89, 0x2f, 0x39, 0x50]
                + [UInt8](repeating: 0, count: 16))
    }

    /// The lane example decodes to its page on lane 1 of a two-lane stream.
    @Test func theLaneExampleDecodesToItsPage() throws {
        let decoder = try PayloadDecompressor(lanes: 2)
        let segment = PageSegment(startPFN: 0x102, pageCount: 1, encoding: .zstdLane, payload: Self.lanePayload, lane: 1)
        #expect(try decoder.decode(segment, pageSize: 4096) == [UInt8](repeating: 0xab, count: 4096))
    }

    /// §13.11. The position is shared by ACK and RESUME_ACCEPT.
    static let examplePosition = StreamPosition(nextSequence: 42, deviceBytes: [0x10_0000, 6])
    static let exampleSecret = [UInt8](repeating: 0x11, count: 32)
    static let exampleBinding = [UInt8](repeating: 0x22, count: 32)

    static func versionTwoExamples() -> [(id: String, bytes: [UInt8])] {
        let session = Array(UInt8(0x00)...0x0f)
        let proof = ResumeProof.compute(secret: exampleSecret, binding: exampleBinding, role: .source, sessionID: session)
        func frame(_ body: ResumptionBody, _ sequence: UInt64) -> [UInt8] {
            do { return try FrameEncoder.frame(body, sequence: sequence) } catch { fatalError("\(error)") }
        }
        return [
            ("ack", frame(.ack(examplePosition), 12)),
            ("resume", frame(.resume(Resume(sessionID: session, role: .source, proof: proof)), 0)),
            ("resume-accept", frame(.resumeAccept(ResumeAccept(progress: .receiving, destinationNextSequence: 13, position: examplePosition)), 0)),
            ("refuse", frame(.refuse(Refusal(reason: .busy, message: "retry")), 0)),
        ]
    }

    /// §14.8: the destination HELLO of §11 in version 3, JOIN of stream 2, JOIN_ACCEPT, STREAM_END, an ACK with the stream tail.
    static func versionThreeExamples() -> [(id: String, bytes: [UInt8])] {
        let session = Array(UInt8(0x00)...0x0f)
        let hello = Hello(version: 3, sessionID: session, role: .destination, encodings: [.raw, .deflate],
                          devices: [DeviceDescriptor(name: "gpu0", pageSize: 4096, compatibility: "10de:1eb8/v2")],
                          memory: [MemoryRange(startPFN: 0, pageCount: 0x40000, pageSize: 4096)], streams: StreamOffer(count: 8, blockPages: 0))
        let proof = ResumeProof.computeJoin(secret: exampleSecret, binding: exampleBinding, sessionID: session, streamIndex: 2)
        func frame(_ body: ResumptionBody, _ sequence: UInt64) -> [UInt8] {
            do { return try FrameEncoder.frame(body, sequence: sequence) } catch { fatalError("\(error)") }
        }
        return [
            ("hello-v3", FrameEncoder.serialize(.hello(hello), device: 0, sequence: 0)),
            ("join", frame(.join(Join(sessionID: session, streamIndex: 2, proof: proof)), 0)),
            ("join-accept", frame(.joinAccept(JoinAccept(streamIndex: 2)), 0)),
            ("stream-end", frame(.streamEnd(StreamEnd(streamIndex: 2, frameCount: 40)), 40)),
            ("ack-v3", frame(.ack(StreamPosition(nextSequence: 42, deviceBytes: [0x10_0000, 6], streamSequences: [0x11, 0])), 12)),
        ]
    }

    static func hexdump(_ bytes: [UInt8]) -> String {
        stride(from: 0, to: bytes.count, by: 16).map { start in
            let offset = String(start, radix: 16)
            let line = bytes[start..<min(start + 16, bytes.count)].map { b in
                (b < 16 ? "0" : "") + String(b, radix: 16)
            }.joined(separator: " ")
            return String(repeating: "0", count: 4 - offset.count) + offset + "  " + line
        }.joined(separator: "\n")
    }

    /// The fenced block after `<!-- example:ID -->`.
    static func blockRange(_ id: String, in doc: String) -> Range<String.Index>? {
        guard let marker = doc.range(of: "<!-- example:\(id) -->"),
              let open = doc.range(of: "```\n", range: marker.upperBound..<doc.endIndex),
              let close = doc.range(of: "\n```", range: open.upperBound..<doc.endIndex) else { return nil }
        return open.upperBound..<close.lowerBound
    }

    @Test func examplesInTheSpecAreTheEncodersBytes() throws {
        var doc = try String(contentsOf: Self.docURL, encoding: .utf8)
        let update = ProcessInfo.processInfo.environment["WIRE_UPDATE_DOC_EXAMPLES"] == "1"
        for (id, bytes) in Self.examples() {
            let range = try #require(Self.blockRange(id, in: doc), "example \(id) missing from PROTOCOL.md")
            if update {
                doc.replaceSubrange(range, with: Self.hexdump(bytes))
            } else {
                #expect(String(doc[range]) == Self.hexdump(bytes), "example \(id) differs from the encoder")
            }
        }
        if update { try doc.write(to: Self.docURL, atomically: true, encoding: .utf8) }
    }

    @Test func specExamplesDecodeToTheirFrames() throws {
        let examples = Self.examples()
        var destination = FrameDecoder(peer: .destination)
        destination.feed(examples[0].bytes)
        #expect(try destination.next() != nil)

        // The PAGES example inflates to its page.
        var reader = ByteReader(examples[1].bytes, range: 24..<examples[1].bytes.count, frame: .pages)
        guard case .pages(let pages) = try FrameBody.parsePayload(.pages, &reader, limits: .default) else { Issue.record("not PAGES"); return }
        let decompressor = try PayloadDecompressor()
        #expect(try decompressor.decode(pages.segments[1], pageSize: 4096) == [UInt8](repeating: 0xAB, count: 4096))
    }

    /// §13.11's frames are read back by the decoders that take them.
    @Test func versionTwoExamplesDecode() throws {
        let bytes = Dictionary(uniqueKeysWithValues: Self.examples().map { ($0.id, $0.bytes) })
        let session = Array(UInt8(0x00)...0x0f)
        var handshake = ResumeHandshakeDecoder(peer: .destination, sessionID: session)
        handshake.feed(try #require(bytes["resume-accept"]))
        #expect(throws: WireError.unexpectedHandshakeFrame(type: .resumeAccept, step: .awaitingResume)) { try handshake.next() }

        var source = ResumeHandshakeDecoder(peer: .source, sessionID: session)
        source.feed(try #require(bytes["resume"]))
        guard case .resume(let resume) = try source.next() else { Issue.record("not RESUME"); return }
        let expected = ResumeProof.compute(secret: Self.exampleSecret, binding: Self.exampleBinding, role: .source, sessionID: session)
        #expect(ResumeProof.matches(resume.proof, expected))

        var refused = ResumeHandshakeDecoder(peer: .source, sessionID: session)
        refused.feed(try #require(bytes["refuse"]))
        #expect(try refused.next() == .refuse(Refusal(reason: .busy, message: "retry")))

        var reader = ByteReader(try #require(bytes["ack"]), range: 24..<56, frame: .ack)
        #expect(try ResumptionBody.parsePayload(.ack, &reader, limits: .default) == .ack(Self.examplePosition))
    }

    /// §14.8's ACK with the stream tail: the position of §13.11 plus A_1 = 17, A_2 = 0,
    /// read by the source's decoder of a three-stream session (and refused in version 2).
    @Test func theStreamTailExampleDecodes() throws {
        let bytes = try #require(Dictionary(uniqueKeysWithValues: Self.examples().map { ($0.id, $0.bytes) })["ack-v3"])
        var reader = ByteReader(bytes, range: 24..<bytes.count, frame: .ack)
        var expected = Self.examplePosition
        expected.streamSequences = [17, 0]
        #expect(try ResumptionBody.parsePayload(.ack, &reader, limits: .default, version: .v3) == .ack(expected))
        var v2 = ByteReader(bytes, range: 24..<bytes.count, frame: .ack)
        #expect(throws: WireError.trailingBytes(frame: .ack, count: 24)) { try ResumptionBody.parsePayload(.ack, &v2, limits: .default, version: .v2) }
    }
}
