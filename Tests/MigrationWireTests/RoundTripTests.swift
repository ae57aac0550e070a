import Testing
@testable import MigrationWire

@Suite struct RoundTripTests {
    /// Every body survives encode → parse unchanged, and the header describes it exactly.
    @Test func randomBodiesRoundTrip() throws {
        var gen = FrameGenerator(seed: 0xF00D)
        var seen = Set<FrameType>()
        for i in 0..<3000 {
            let body = gen.body()
            let device = body.type.isDeviceSpecific ? UInt32(gen.int(0...70)) : 0
            let bytes = FrameEncoder.serialize(body, device: device, sequence: UInt64(i))
            let header = try FrameHeader.parse(bytes, at: 0)
            #expect(header == FrameHeader(type: body.type, flags: 0, device: device, payloadLength: bytes.count - 24, sequence: UInt64(i)))
            var reader = ByteReader(bytes, range: 24..<bytes.count, frame: body.type)
            let decoded = try FrameBody.parsePayload(body.type, &reader, limits: .default)
            #expect(decoded == body, "case \(i)")
            seen.insert(body.type)
        }
        #expect(seen == Set(FrameType.allCases.filter { $0.introduced == .v1 }))
    }

    @Test func encoderNumbersFramesFromZeroContiguously() throws {
        var encoder = FrameEncoder()
        #expect(encoder.nextSequence == 0)
        for expected in 0..<5 as Range<UInt64> {
            let bytes = try encoder.encode(.keepAlive)
            #expect(loadLE64(bytes, at: 16) == expected)
        }
        #expect(encoder.nextSequence == 5)
    }

    @Test func appendingEncodesTheSameBytesAsSeparateFrames() throws {
        let bodies: [(FrameBody, UInt32)] = [
            (.keepAlive, 0),
            (.deviceData(DeviceData(phase: .precopy, encoding: .raw, originalLength: 3, payload: [1, 2, 3])), 2),
            (.complete, 0),
        ]
        var separate = FrameEncoder(), appending = FrameEncoder()
        var expected: [UInt8] = []
        for (b, d) in bodies { expected += try separate.encode(b, device: d) }
        var buffer: [UInt8] = [0xAA]  // appends after what is there
        for (b, d) in bodies { try appending.encode(b, device: d, appendingTo: &buffer) }
        #expect(buffer == [0xAA] + expected)
        #expect(appending.nextSequence == 3)
    }

    /// Whole sessions decode to exactly the frames encoded, whatever the read sizes.
    @Test func sessionsDecodeWithArbitrarySplits() throws {
        var gen = FrameGenerator(seed: 42)
        let compressor = try PayloadCompressor(policy: .auto)
        let decompressor = try PayloadDecompressor()
        for round in 0..<150 {
            let stream = try gen.sourceSession(compressor: round % 2 == 0 ? compressor : nil)
            var decoder = FrameDecoder(peer: .source)
            var decoded: [Frame] = []
            var offset = 0
            while offset < stream.bytes.count {
                // Mostly small reads (1 byte splits headers), sometimes large ones.
                let n = gen.rng.chance(0.3) ? gen.int(1...3) : gen.int(1...2000)
                let end = min(stream.bytes.count, offset + n)
                decoder.feed(Array(stream.bytes[offset..<end]))
                offset = end
                while let frame = try decoder.next() { decoded.append(frame) }
            }
            #expect(decoder.bufferedByteCount == 0)
            try decoder.finish()
            #expect(decoded == stream.frames, "round \(round)")
            // Compressed payloads come back to real bytes of the declared size.
            for frame in decoded {
                if case .deviceData(let d) = frame.body { #expect(try decompressor.decode(d).count == Int(d.originalLength)) }
                if case .pages(let p) = frame.body, round % 2 == 0 {
                    for s in p.segments { #expect(try decompressor.decode(s, pageSize: Int(p.pageSize)).count == Int(s.pageCount) * Int(p.pageSize)) }
                }
            }
        }
    }

    @Test func destinationSessionsDecode() throws {
        var gen = FrameGenerator(seed: 7)
        for _ in 0..<100 {
            let stream = gen.destinationSession()
            #expect(try decodeAll(stream.bytes, peer: .destination) == stream.frames)
        }
    }

    @Test func helloSetsDeviceCountAndMemoryUnlessTheCallerDid() throws {
        var decoder = FrameDecoder(peer: .source)
        decoder.feed(StreamBuilder.source(devices: 3).bytes)
        _ = try decoder.next()
        #expect(decoder.deviceCount == 3)
        #expect(decoder.memory == testMemory)
        #expect(decoder.state == .established)

        var preset = FrameDecoder(peer: .source)
        preset.deviceCount = 1
        preset.memory = [MemoryRange(startPFN: 0, pageCount: 1, pageSize: 4096)]
        preset.feed(StreamBuilder.source(devices: 3).bytes)
        _ = try preset.next()
        #expect(preset.deviceCount == 1)
        #expect(preset.memory.count == 1)
    }

    @Test func abortTextIsCutAtACharacterBoundary() throws {
        let long = String(repeating: "é", count: 600)  // 1200 UTF-8 bytes
        let bytes = FrameEncoder.serialize(.abort(Abort(reason: .deviceError, message: long)), device: 0, sequence: 0)
        var reader = ByteReader(bytes, range: 24..<bytes.count, frame: .abort)
        guard case .abort(let a) = try FrameBody.parsePayload(.abort, &reader, limits: .default) else { Issue.record("not ABORT"); return }
        #expect(a.message == String(repeating: "é", count: 512))
        #expect(a.reason == .deviceError)
    }

    @Test func unknownAbortReasonReadsAsUnspecified() throws {
        var s = StreamBuilder.source()
        let payload: [UInt8] = [0x63, 0x00, 0x02, 0x00] + Array("hi".utf8)
        s.bytes += rawFrame(type: FrameType.abort.rawValue, sequence: 1, payload: payload)
        let frames = try decodeAll(s.bytes)
        #expect(frames.last?.body == .abort(Abort(reason: .unspecified, message: "hi")))
    }
}
