import Testing
@testable import MigrationWire
#if canImport(Glibc)
import Glibc
#endif

/// Bounded mutation fuzzing: valid session streams are mutated (bit flips, byte
/// rewrites, truncations, splices, length and count field rewrites, duplicated,
/// dropped or inserted frames) and fed to the decoder at random split points;
/// decoded DEVICE_DATA and PAGES payloads go through the decompressor too.
/// Nothing may crash, and every failure must be a WireError.
///
/// Runs ~2 s by default. Longer / another seed:
///   WIRE_FUZZ_SECONDS=600 WIRE_FUZZ_SEED=123 swift test -c release --filter FuzzTests
/// (or Fuzz/run.sh). A failing case prints its seed and iteration.
@Suite struct FuzzTests {
    static func environment(_ name: String) -> String? { getenv(name).map { String(cString: $0) } }

    struct Entry {
        var bytes: [UInt8]; var offsets: [Int]; var peer: Role; var version: ProtocolVersion = .v1
        /// Version 3: an extra stream (index 1 of `testRouting`), decoded in joined mode.
        var joined = false
        /// Version 3: the session's streams, whose positions ACKs carry.
        var streams = 1
        /// Version 4: zstd lanes per stream (each case decodes them with fresh lane decoders).
        var lanes = 0

        func decoder(limits: WireLimits) -> FrameDecoder {
            guard joined else {
                var decoder = FrameDecoder(peer: peer, limits: limits, version: version)
                decoder.sessionStreams = streams
                return decoder
            }
            var decoder = FrameDecoder(joinedStream: 1, routing: testRouting, memory: FrameGenerator.joinedMemory,
                                       encodings: [.raw, .deflate, .zstd, .zstdLanes] + (version >= .v6 ? [.pageCopies] : []),
                                       limits: limits, version: max(version, .v3))
            decoder.laneCount = lanes
            return decoder
        }
    }

    @Test func mutatedStreamsFailOnlyWithWireErrors() throws {
        let seconds = Double(Self.environment("WIRE_FUZZ_SECONDS") ?? "") ?? 2
        let seed = UInt64(Self.environment("WIRE_FUZZ_SEED") ?? "") ?? 0x5EED
        var gen = FrameGenerator(seed: seed)
        let compressor = try PayloadCompressor(policy: .auto)
        let zstd = try PayloadCompressor(policy: .zstd(level: 1), zstdAccepted: true)
        var corpus: [Entry] = []
        for i in 0..<12 {
            // zstd is a version-2 encoding: its sessions are version 2.
            let version: ProtocolVersion = i % 3 == 2 ? .v2 : .v1
            let s = try gen.sourceSession(compressor: [compressor, nil, zstd][i % 3], version: version)
            corpus.append(Entry(bytes: s.bytes, offsets: s.offsets, peer: .source, version: version))
        }
        for _ in 0..<6 {
            let s = gen.destinationSession()
            corpus.append(Entry(bytes: s.bytes, offsets: s.offsets, peer: .destination))
        }
        // Version 2: the same source streams under a v2 HELLO, destination streams with ACKs.
        for _ in 0..<3 {
            let s = try gen.sourceSession(compressor: compressor, version: .v2)
            corpus.append(Entry(bytes: s.bytes, offsets: s.offsets, peer: .source, version: .v2))
            let d = gen.destinationSession(version: .v2)
            corpus.append(Entry(bytes: d.bytes, offsets: d.offsets, peer: .destination, version: .v2))
        }
        // Version 3: stream 0 under a HELLO with the stream tail (its pages must be its own),
        // extra streams (PAGES, STREAM_END), destination streams with the tail.
        for i in 0..<3 {
            let s = try gen.sourceSession(compressor: [compressor, zstd, nil][i], version: .v3)
            corpus.append(Entry(bytes: s.bytes, offsets: s.offsets, peer: .source, version: .v3))
            let j = try gen.joinedStreamSession(compressor: [compressor, nil, zstd][i])
            corpus.append(Entry(bytes: j.bytes, offsets: j.offsets, peer: .source, version: .v3, joined: true))
            let d = gen.destinationSession(version: .v3)
            corpus.append(Entry(bytes: d.bytes, offsets: d.offsets, peer: .destination, version: .v3))
            // §14.5: ACKs of a session of 2–4 streams carry each extra stream's position.
            let t = gen.destinationSession(version: .v3, streams: i + 2)
            corpus.append(Entry(bytes: t.bytes, offsets: t.offsets, peer: .destination, version: .v3, streams: i + 2))
        }
        // Version 4: zstd pages as lane segments (§15) on stream 0 and an extra stream, at three levels.
        var laneFrames = 0
        for i in 0..<3 {
            let lanes = try (0..<(i + 1)).map { ZstdLane(index: UInt8($0), encoder: try ZstdLaneEncoder()) }
            let level = try PayloadCompressor(policy: .zstd(level: [1, 3, -2][i]), zstdAccepted: true)
            let s = try gen.sourceSession(compressor: level, version: .v4, lanes: lanes)
            corpus.append(Entry(bytes: s.bytes, offsets: s.offsets, peer: .source, version: .v4, lanes: lanes.count))
            let joinedLanes = try (0..<2).map { ZstdLane(index: UInt8($0), encoder: try ZstdLaneEncoder()) }
            let j = try gen.joinedStreamSession(compressor: level, lanes: joinedLanes)
            corpus.append(Entry(bytes: j.bytes, offsets: j.offsets, peer: .source, version: .v4, joined: true, lanes: 2))
            laneFrames += (s.frames + j.frames).filter { if case .pages(let p) = $0.body { p.hasLaneSegments } else { false } }.count
        }
        #expect(laneFrames > 0, "the corpus has lane segments")
        // Version 5: the HELLO lists encoding 4 (§16), with lanes and without.
        for lanes in [0, 2] {
            let laneEncoders = try (0..<lanes).map { ZstdLane(index: UInt8($0), encoder: try ZstdLaneEncoder()) }
            let level = try PayloadCompressor(policy: .zstd(level: 3), zstdAccepted: true)
            let s = try gen.sourceSession(compressor: level, version: .v5, lanes: laneEncoders)
            corpus.append(Entry(bytes: s.bytes, offsets: s.offsets, peer: .source, version: .v5, lanes: lanes))
        }
        // Version 6: copy segments (§17) among generated and compressed pages, on stream 0
        // under a HELLO listing encoding 5, and on an extra stream.
        var copyFrames = 0
        for i in 0..<3 {
            let level = try PayloadCompressor(policy: .zstd(level: 3), zstdAccepted: true)
            let s = try gen.sourceSession(compressor: [nil, compressor, level][i], version: .v6)
            corpus.append(Entry(bytes: s.bytes, offsets: s.offsets, peer: .source, version: .v6))
            let j = try gen.joinedStreamSession(compressor: [compressor, nil, level][i], copies: true)
            corpus.append(Entry(bytes: j.bytes, offsets: j.offsets, peer: .source, version: .v6, joined: true))
            copyFrames += (s.frames + j.frames).filter { if case .pages(let p) = $0.body { p.segments.contains { $0.encoding == .copy } } else { false } }.count
        }
        #expect(copyFrames > 0, "the corpus has copy segments")
        // Unmutated, every version-6 entry decodes: the copies it holds are valid ones.
        for entry in corpus where entry.version == .v6 {
            var decoder = entry.decoder(limits: .default)
            decoder.feed(entry.bytes)
            #expect(throws: Never.self) { while try decoder.nextMessage() != nil {}; try decoder.finish() }
        }

        var rng = SeededRNG(seed: seed ^ 0xFFFF)
        let decompressor = try PayloadDecompressor()
        var iterations = 0, rejected = 0, accepted = 0, framesSeen = 0, copiesDecoded = 0
        var errorKinds = Set<String>()
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < deadline || iterations < 300 {
            iterations += 1
            let entry = corpus[Int.random(in: 0..<corpus.count, using: &rng)]
            var bytes = entry.bytes
            for _ in 0..<Int.random(in: 1...3, using: &rng) {
                mutate(&bytes, entry: entry, corpus: corpus, rng: &rng)
            }
            let limits = rng.chance(0.2) ? WireLimits(maxPayload: 4096, maxInflated: 4096, maxDevices: 2, maxPFNsPerFrame: 64) : .default
            var decoder = entry.decoder(limits: limits)
            let inflateLimits = limits
            // A lane's decoder follows one stream from its start: a fresh one per case.
            let payloads = entry.lanes > 0 ? try PayloadDecompressor(limits: limits, lanes: entry.lanes) : decompressor
            // Half the cases arrive as the receiver reads them: straight into the
            // decoder's buffer, as much as the pending header or frame still needs.
            let viaFill = rng.chance(0.5)
            do {
                var offset = 0
                while offset < bytes.count {
                    let end = min(bytes.count, offset + Int.random(in: 1...700, using: &rng))
                    if viaFill {
                        let want = min(decoder.bytesWanted, bytes.count - offset, Int.random(in: 1...70_000, using: &rng))
                        let got = decoder.fill(maxCount: want) { span in for b in bytes[offset..<(offset + want)] { span.append(b) } }
                        #expect(got == want)
                        offset += want
                    } else {
                        decoder.feed(Array(bytes[offset..<end]))
                        offset = end
                    }
                    while let message = try decoder.nextMessage() {
                        framesSeen += 1
                        if case .frame(let frame) = message {
                            copiesDecoded += try exercisePayloads(frame, decompressor: payloads, limits: inflateLimits)
                        }
                    }
                }
                try decoder.finish()
                accepted += 1
            } catch let error as WireError {
                rejected += 1
                errorKinds.insert(Mirror(reflecting: error).children.first?.label ?? "\(error)")
                #expect(!error.description.isEmpty)
            } catch {
                Issue.record("seed \(seed) iteration \(iterations): non-WireError \(error)")
            }
        }
        // Not vacuous: mutations were both caught and survived, in many different ways.
        #expect(rejected > iterations / 4)
        #expect(accepted > 0)
        #expect(errorKinds.count >= 20, "\(errorKinds.sorted())")
        #expect(copiesDecoded > 0, "copy segments passed the decoder")
        print("fuzz: seed \(seed), \(iterations) cases in \(seconds) s: \(rejected) rejected, \(accepted) accepted, \(framesSeen) frames, "
              + "\(copiesDecoded) copy segments, \(errorKinds.count) error kinds: \(errorKinds.sorted().joined(separator: " "))")
    }

    /// Mutated resume handshakes (both roles, split anywhere): a message, the end of
    /// the handshake, or a WireError; never a crash, never more than the handshake.
    @Test func mutatedResumeHandshakesFailOnlyWithWireErrors() throws {
        var gen = FrameGenerator(seed: 0x4E5)
        var rng = SeededRNG(seed: 0x4E6)
        var corpus: [Entry] = []
        for _ in 0..<8 {
            let h = try gen.resumeHandshake()
            corpus.append(Entry(bytes: h.bytes, offsets: h.offsets, peer: h.peer, version: .v2))
            let t = try gen.resumeHandshake(streams: 3)
            corpus.append(Entry(bytes: t.bytes, offsets: t.offsets, peer: t.peer, version: .v3))
            let j = gen.joinHandshake()
            corpus.append(Entry(bytes: j.bytes, offsets: j.offsets, peer: j.peer, version: .v3))
        }
        var outcomes = [0, 0]
        for _ in 0..<4000 {
            let entry = corpus[Int.random(in: 0..<corpus.count, using: &rng)]
            var bytes = entry.bytes
            for _ in 0..<Int.random(in: 1...2, using: &rng) { mutate(&bytes, entry: entry, corpus: corpus, rng: &rng) }
            var decoder = ResumeHandshakeDecoder(peer: entry.peer, sessionID: testSessionID, limits: rng.chance(0.2) ? WireLimits(maxPayload: 40) : .default,
                                                 version: entry.version)
            do {
                var offset = 0
                while offset < bytes.count {
                    let end = min(bytes.count, offset + Int.random(in: 1...90, using: &rng))
                    decoder.feed(Array(bytes[offset..<end]))
                    offset = end
                    while try decoder.next() != nil {}
                }
                outcomes[0] += 1
            } catch is WireError {
                outcomes[1] += 1
            }
        }
        #expect(outcomes[0] > 100 && outcomes[1] > 1000, "\(outcomes)")
    }

    /// Inflating mutated deflate streams: exactly the declared bytes or a WireError.
    @Test func mutatedDeflateStreamsNeverOverrun() throws {
        let deflater = try Deflater(level: 6)
        let all = try inflaters()
        var i = 0
        try mutatedPayloadsNeverOverrun(seed: 77, compress: { try deflater.compress($0) }) { packed, declared in
            i += 1
            return try all[i % all.count].inflate(packed, expectedLength: declared, limit: 4000, frame: nil)
        }
    }

    /// Decompressing mutated zstd frames: exactly the declared bytes or a WireError.
    @Test func mutatedZstdFramesNeverOverrun() throws {
        let compressor = try ZstdCompressor(level: 1)
        let decompressor = try ZstdDecompressor()
        try mutatedPayloadsNeverOverrun(seed: 78, compress: { try compressor.compress($0[...]) }) { packed, declared in
            try decompressor.decompress(packed, expectedLength: declared, limit: 4000, frame: nil)
        }
    }

    /// Random and text buffers, compressed, then bit-flipped, truncated and declared ±2
    /// bytes off: every decode gives exactly the declared length or throws.
    private func mutatedPayloadsNeverOverrun(seed: UInt64, compress: ([UInt8]) throws -> [UInt8],
                                             decode: ([UInt8], Int) throws -> [UInt8]) throws {
        var rng = SeededRNG(seed: seed)
        var outcomes = [0, 0]
        for i in 0..<3000 {
            let original = i % 3 == 0 ? rng.bytes(Int.random(in: 1...300, using: &rng)) : textBytes(Int.random(in: 1...3000, using: &rng))
            var packed = try compress(original)
            for _ in 0..<Int.random(in: 0...2, using: &rng) {
                packed[Int.random(in: 0..<packed.count, using: &rng)] ^= UInt8(1) << UInt8.random(in: 0...7, using: &rng)
            }
            if rng.chance(0.2) { packed = Array(packed.prefix(Int.random(in: 0...packed.count, using: &rng))) }
            let declared = max(0, original.count + Int.random(in: -2...2, using: &rng))
            do {
                let out = try decode(packed, declared)
                #expect(out.count == declared)
                outcomes[0] += 1
            } catch is WireError {
                outcomes[1] += 1
            }
        }
        #expect(outcomes[0] > 100 && outcomes[1] > 100, "\(outcomes)")
    }

    /// Decodes what a receiver would; returns the copy segments seen (applied from guest
    /// memory, never decoded: the decompressor refuses them).
    private func exercisePayloads(_ frame: Frame, decompressor: PayloadDecompressor, limits: WireLimits) throws -> Int {
        var copies = 0
        switch frame.body {
        case .deviceData(let d):
            let out = try decompressor.decode(d)
            #expect(out.count == Int(d.originalLength))
        case .pages(let p):
            for s in p.segments {
                if let source = s.copySourcePFN {
                    copies += 1
                    let end = s.startPFN + UInt64(s.pageCount)
                    #expect(source + UInt64(s.pageCount) <= s.startPFN || end <= source, "the decoder let an overlapping copy through")
                    continue
                }
                #expect(s.encoding != .copy, "a copy segment without its 8-byte source PFN")
                // A lane segment decodes once: it moves its lane's stream on.
                guard s.encoding != .zstdLane else {
                    #expect(try decompressor.decode(s, pageSize: Int(p.pageSize)).count == Int(s.pageCount) * Int(p.pageSize))
                    continue
                }
                let out = try decompressor.decode(s, pageSize: Int(p.pageSize))
                #expect(out.count == Int(s.pageCount) * Int(p.pageSize))
                // The receiver's way: straight into (here: a copy of) the pages.
                var pages = [UInt8](repeating: 0xEE, count: out.count)
                var span = pages.mutableSpan
                try decompressor.decode(s, pageSize: Int(p.pageSize), into: &span)
                #expect(pages == out)
            }
        default: break
        }
        return copies
    }

    private func mutate(_ bytes: inout [UInt8], entry: Entry, corpus: [Entry], rng: inout SeededRNG) {
        let interesting: [UInt8] = [0, 1, 0x7F, 0x80, 0xFF]
        let interesting32: [UInt32] = [0, 1, 7, 0x7FFF_FFFF, 0xFFFF_FFFF, 4096, 4097, 16 << 20, (16 << 20) + 1]
        func randomIndex() -> Int? { bytes.isEmpty ? nil : Int.random(in: 0..<bytes.count, using: &rng) }
        func frameOffset() -> Int? { entry.offsets.filter { $0 + 24 <= bytes.count }.randomElement(using: &rng) }
        func write32(_ v: UInt32, at i: Int) {
            for k in 0..<4 where i + k < bytes.count { bytes[i + k] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(k))) }
        }
        switch Int.random(in: 0...9, using: &rng) {
        case 0:  // bit flip
            if let i = randomIndex() { bytes[i] ^= UInt8(1) << UInt8.random(in: 0...7, using: &rng) }
        case 1:  // interesting byte
            if let i = randomIndex() { bytes[i] = interesting.randomElement(using: &rng)! }
        case 2:  // truncation
            bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &rng)))
        case 3:  // splice with another stream
            let other = corpus.randomElement(using: &rng)!.bytes
            let cut = Int.random(in: 0...bytes.count, using: &rng)
            bytes = Array(bytes.prefix(cut)) + other.suffix(Int.random(in: 0...other.count, using: &rng))
        case 4:  // header payload-length rewrite
            if let off = frameOffset() {
                let current = loadLE32(bytes, at: off + 12)
                let choices: [UInt32] = [current &- 1, current &+ 1, current / 2, interesting32.randomElement(using: &rng)!, UInt32.random(in: 0...UInt32.max, using: &rng)]
                write32(choices.randomElement(using: &rng)!, at: off + 12)
            }
        case 5:  // a count/length/PFN field inside a payload
            if let off = frameOffset() {
                let payloadLength = Int(loadLE32(bytes, at: off + 12))
                if payloadLength >= 4 {
                    let at = off + 24 + Int.random(in: 0...(min(payloadLength, 64) - 4), using: &rng)
                    write32(interesting32.randomElement(using: &rng)!, at: at)
                }
            }
        case 6:  // duplicate a frame
            if let i = entry.offsets.indices.randomElement(using: &rng), entry.offsets[i] < bytes.count {
                let start = entry.offsets[i]
                let end = i + 1 < entry.offsets.count ? entry.offsets[i + 1] : entry.bytes.count
                if end <= bytes.count { bytes.insert(contentsOf: bytes[start..<end], at: end) }
            }
        case 7:  // drop a frame
            if let i = entry.offsets.indices.randomElement(using: &rng), i + 1 < entry.offsets.count, entry.offsets[i + 1] <= bytes.count {
                bytes.removeSubrange(entry.offsets[i]..<entry.offsets[i + 1])
            }
        case 8:  // insert random bytes
            let at = Int.random(in: 0...bytes.count, using: &rng)
            bytes.insert(contentsOf: rng.bytes(Int.random(in: 1...16, using: &rng)), at: at)
        default:  // header field rewrite: type, flags, device or sequence
            if let off = frameOffset() {
                let field = [4, 6, 8, 16].randomElement(using: &rng)!
                bytes[off + field] = interesting.randomElement(using: &rng)!
            }
        }
    }
}
