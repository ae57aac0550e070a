import Testing
@testable import MigrationWire

/// The error a call throws, nil if it succeeds.
func failure(_ body: () throws(WireError) -> [UInt8]) -> WireError? {
    do { _ = try body(); return nil } catch { return error }
}

/// Both inflaters, zlib's (the reference) and libdeflate's (what the engine
/// uses): every rule below must hold for each of them.
func inflaters() throws -> [any RawDeflateInflater] { [try Inflater(), try FastInflater()] }

@Suite struct DeflateTests {
    @Test func roundTripsAcrossLevelsAndReuse() throws {
        var rng = SeededRNG(seed: 3)
        for inflater in try inflaters() {
            for level in [1, 6, 9] {
                let deflater = try Deflater(level: level)
                for size in [0, 1, 100, 4096, 70_000] {
                    let input = rng.chance(0.5) ? textBytes(size) : mixedPages(pages: 2, pageSize: max(1, size / 2), rng: &rng)
                    let packed = try deflater.compress(input)
                    #expect(try inflater.inflate(packed, expectedLength: input.count, limit: 1 << 20, frame: nil) == input)
                }
            }
        }
        #expect(throws: WireError.invalidCompressionLevel(10)) { try Deflater(level: 10) }
    }

    /// libdeflate's output is the same raw DEFLATE: zlib reads it, and the reverse.
    @Test func libdeflateAndZlibReadEachOther() throws {
        var rng = SeededRNG(seed: 21)
        let zlibIn = try Inflater(), fastIn = try FastInflater()
        for size in [0, 1, 4096, 300_000] {
            let input = rng.chance(0.5) ? textBytes(size) : mixedPages(pages: 4, pageSize: max(1, size / 4), rng: &rng)
            let fromFast = try FastDeflater(level: 1).compress(input[...])
            let fromZlib = try Deflater(level: 1).compress(input)
            #expect(try zlibIn.inflate(fromFast, expectedLength: input.count, limit: 1 << 20, frame: nil) == input)
            #expect(try fastIn.inflate(fromZlib, expectedLength: input.count, limit: 1 << 20, frame: nil) == input)
        }
    }

    @Test func decompressionBombStopsAtTheDeclaredLength() throws {
        let bomb = try Deflater(level: 9).compress([UInt8](repeating: 0, count: 8 << 20))  // ~8 KiB → 8 MiB
        #expect(bomb.count < 16 << 10)
        for inflater in try inflaters() {
            #expect(throws: WireError.inflatedExceedsDeclared(frame: nil, declared: 4096)) {
                try inflater.inflate(bomb, expectedLength: 4096, limit: 16 << 20, frame: nil)
            }
            // Declared above the limit: refused before inflating anything.
            #expect(throws: WireError.inflatedTooLarge(frame: nil, declared: 8 << 20, limit: 1 << 20)) {
                try inflater.inflate(bomb, expectedLength: 8 << 20, limit: 1 << 20, frame: nil)
            }
            // Counts are 32-bit on the wire: a caller's huge limit is capped, not trusted.
            #expect(throws: WireError.inflatedTooLarge(frame: nil, declared: 5 << 30, limit: Int(UInt32.max) - 1)) {
                try inflater.inflate(bomb, expectedLength: 5 << 30, limit: .max, frame: nil)
            }
            // The same inflater still works afterwards (reset between calls).
            #expect(try inflater.inflate(try Deflater(level: 1).compress([1, 2, 3]), expectedLength: 3, limit: 3, frame: nil) == [1, 2, 3])
        }
        #expect(throws: WireError.invalidPageSize(frame: .pages, pageSize: 0)) {
            try PayloadDecompressor().decode(PageSegment(startPFN: 0, pageCount: 1, encoding: .zero, payload: []), pageSize: 0)
        }
    }

    @Test func inflatedLengthMustEqualTheDeclaredLength() throws {
        let packed = try Deflater(level: 6).compress(textBytes(1000))
        let decompressor = try PayloadDecompressor()
        #expect(throws: WireError.inflatedLengthMismatch(frame: .deviceData, declared: 2000, actual: 1000)) {
            try decompressor.decode(DeviceData(phase: .precopy, encoding: .deflate, originalLength: 2000, payload: packed))
        }
        #expect(throws: WireError.inflatedExceedsDeclared(frame: .deviceData, declared: 999)) {
            try decompressor.decode(DeviceData(phase: .precopy, encoding: .deflate, originalLength: 999, payload: packed))
        }
        #expect(try decompressor.decode(DeviceData(phase: .precopy, encoding: .deflate, originalLength: 1000, payload: packed)) == textBytes(1000))
    }

    @Test func corruptDeflateStreamsAreErrors() throws {
        let packed = try Deflater(level: 6).compress(textBytes(5000))
        for inflater in try inflaters() {
            #expect(throws: WireError.corruptDeflateStream(frame: nil, detail: "2 byte(s) after the end of the stream")) {
                try inflater.inflate(packed + [0xAA, 0xBB], expectedLength: 5000, limit: 1 << 20, frame: nil)
            }
            let truncated = failure { () throws(WireError) in
                try inflater.inflate(Array(packed.prefix(packed.count / 2)), expectedLength: 5000, limit: 1 << 20, frame: nil)
            }
            guard case .corruptDeflateStream(nil, let detail)? = truncated else { Issue.record("truncated stream: \(String(describing: truncated))"); continue }
            #expect(detail.contains("truncated"))
            let garbage = failure { () throws(WireError) in
                try inflater.inflate([0xFF, 0xFF, 0xFF, 0xFF], expectedLength: 10, limit: 100, frame: nil)
            }
            guard case .corruptDeflateStream? = garbage else { Issue.record("garbage: \(String(describing: garbage))"); continue }
            #expect(throws: WireError.self) { try inflater.inflate([], expectedLength: 0, limit: 0, frame: nil) }
            #expect(try inflater.inflate(try Deflater(level: 1).compress([]), expectedLength: 0, limit: 0, frame: nil) == [])
        }
    }
}

@Suite struct PolicyTests {
    @Test func compressionPolicyParsesOnlyItsSpelledForms() throws {
        #expect(try CompressionPolicy(parsing: "none") == .none)
        #expect(try CompressionPolicy(parsing: "auto") == .auto)
        for level in 1...9 { #expect(try CompressionPolicy(parsing: "zlib:\(level)") == .zlib(level: level)) }
        for bad in ["", "zlib", "zlib:", "zlib:0", "zlib:10", "zlib:01", "zlib:+1", "ZLIB:1", "lz4", "auto "] {
            #expect(throws: WireError.invalidCompressionPolicy(bad)) { try CompressionPolicy(parsing: bad) }
        }
        for policy in [CompressionPolicy.none, .auto, .zlib(level: 4)] {
            #expect(try CompressionPolicy(parsing: policy.description) == policy)
        }
    }

    @Test func randomDataGoesRawAndAutoSkipsTheFullDeflate() throws {
        var rng = SeededRNG(seed: 11)
        let random = rng.bytes(1 << 20)
        let auto = try PayloadCompressor(policy: .auto)
        let (encoding, out) = try auto.encode(random)
        #expect(encoding == .raw && out == random)
        #expect(auto.counters.probes == 1)
        #expect(auto.counters.probeRejections == 1)
        #expect(auto.counters.fullDeflates == 0)

        // zlib:N has no probe: it deflates, sees < 5 % gain, and still sends raw.
        let zlib = try PayloadCompressor(policy: .zlib(level: 6))
        #expect(try zlib.encode(random).0 == .raw)
        #expect(zlib.counters.fullDeflates == 1 && zlib.counters.deflateNotWorthIt == 1)
    }

    /// The sample probe saves deflate's time on random data; zstd stores such blocks raw
    /// by itself, so a zstd choice compresses the whole buffer: a buffer whose four sampled
    /// slices are random and the rest text goes raw under deflate and compressed under zstd.
    @Test func onlyDeflateChoicesAreProbed() throws {
        var rng = SeededRNG(seed: 12)
        var buffer = textBytes(1 << 20)
        let stride = (buffer.count - PayloadCompressor.probeSliceBytes) / (PayloadCompressor.probeSlices - 1)
        for k in 0..<PayloadCompressor.probeSlices {
            buffer.replaceSubrange((k * stride)..<(k * stride + PayloadCompressor.probeSliceBytes), with: rng.bytes(PayloadCompressor.probeSliceBytes))
        }
        let auto = try PayloadCompressor(policy: .auto, zstdAccepted: true)
        #expect(try auto.encode(buffer, choice: .codec(.deflate(level: 1))).0 == .raw)
        #expect(auto.counters.probes == 1 && auto.counters.probeRejections == 1)
        let (encoding, out) = try auto.encode(buffer, choice: .codec(.zstd(level: 3)))
        #expect(encoding == .zstd && out.count < buffer.count / 4)
        #expect(auto.counters.probes == 1, "no probe for zstd")
        let data = DeviceData(phase: .precopy, encoding: encoding, originalLength: UInt32(buffer.count), payload: out)
        #expect(try PayloadDecompressor().decode(data) == buffer)
    }

    @Test func textIsDeflatedByAutoAndZlib() throws {
        let text = textBytes(200_000)
        let decompressor = try PayloadDecompressor()
        for policy in [CompressionPolicy.auto, .zlib(level: 1), .zlib(level: 9)] {
            let compressor = try PayloadCompressor(policy: policy)
            let (encoding, out) = try compressor.encode(text)
            #expect(encoding == .deflate)
            #expect(out.count < text.count / 4)
            #expect(compressor.counters.fullDeflates == 1)
            let data = DeviceData(phase: .precopy, encoding: encoding, originalLength: UInt32(text.count), payload: out)
            #expect(try decompressor.decode(data) == text)
        }
        let none = try PayloadCompressor(policy: .none)
        #expect(try none.encode(text) == (.raw, text))
        #expect(none.counters.fullDeflates == 0 && none.counters.probes == 0)
    }

    /// Random pages between text pages: `auto` sends them raw without deflating
    /// them; `zlib:1` deflates everything that is not zero and keeps the 95 % rule.
    @Test func autoSendsRandomPagesRawOnSight() throws {
        var rng = SeededRNG(seed: 9)
        let ps = 4096
        var bytes: [UInt8] = []
        for i in 0..<32 { bytes += i % 2 == 0 ? rng.bytes(ps) : textBytes(ps) }
        let auto = try PayloadCompressor(policy: .auto)
        let segments = try auto.encodePages(startPFN: 0, pageSize: ps, bytes: bytes)
        #expect(segments.count == 32)
        #expect(auto.counters.pagesLookingRandom == 16)
        #expect(auto.counters.fullDeflates == 16, "the text pages only")
        #expect(segments.enumerated().allSatisfy { i, s in s.encoding == (i % 2 == 0 ? .raw : .deflate) })
        let zlib = try PayloadCompressor(policy: .zlib(level: 1))
        let plain = try zlib.encodePages(startPFN: 0, pageSize: ps, bytes: bytes)
        #expect(zlib.counters.pagesLookingRandom == 0)
        #expect(zlib.counters.fullDeflates == 1 && plain.count == 1, "one run of 32 non-zero pages, deflated whole")
        let decompressor = try PayloadDecompressor()
        #expect(try segments.flatMap { try decompressor.decode($0, pageSize: ps) } == bytes)
    }

    @Test func pagesAreEncodedAsSegmentsOfOneEncoding() throws {
        var rng = SeededRNG(seed: 5)
        let ps = 4096
        // zero×3, text×2, zero×1, random×1, zero×1, text×100 (cut at 64-page segments)
        let zeroPage = [UInt8](repeating: 0, count: ps)
        let bytes = zeroPage + zeroPage + zeroPage + textBytes(2 * ps) + zeroPage + rng.bytes(ps)
            + zeroPage + textBytes(100 * ps)
        let compressor = try PayloadCompressor(policy: .auto)
        let segments = try compressor.encodePages(startPFN: 500, pageSize: ps, bytes: bytes)
        #expect(segments.map(\.encoding) == [.zero, .deflate, .zero, .raw, .zero, .deflate, .deflate])
        #expect(segments.map(\.pageCount) == [3, 2, 1, 1, 1, 64, 36])
        // Consecutive PFNs covering the input exactly, and decoding gives the input back.
        var pfn: UInt64 = 500
        var decoded: [UInt8] = []
        let decompressor = try PayloadDecompressor()
        for s in segments {
            #expect(s.startPFN == pfn)
            pfn += UInt64(s.pageCount)
            decoded += try decompressor.decode(s, pageSize: ps)
        }
        #expect(pfn == 500 + 108)
        #expect(decoded == bytes)
        #expect(compressor.counters.pagesLookingRandom == 1, "the random page went raw on sight")
        #expect(compressor.counters.fullDeflates == 3, "only the three text runs were deflated")
        #expect(throws: WireError.unalignedPages(byteCount: 100, pageSize: ps)) { try compressor.encodePages(startPFN: 0, pageSize: ps, bytes: [UInt8](repeating: 0, count: 100)) }
    }

    @Test func longZeroRunsAreBoundedSegments() throws {
        let compressor = try PayloadCompressor(policy: .none)
        let segments = try compressor.encodePages(startPFN: 0, pageSize: 4096, bytes: [UInt8](repeating: 0, count: 3000 * 4096))
        #expect(segments.map(\.pageCount) == [1024, 1024, 952])
        #expect(segments.allSatisfy { $0.encoding == .zero && $0.payload.isEmpty })
        #expect(compressor.counters.buffers == 0)
    }

    @Test func generatedPagesRoundTrip() throws {
        var rng = SeededRNG(seed: 99)
        let decompressor = try PayloadDecompressor()
        for policy in [CompressionPolicy.none, .auto, .zlib(level: 3)] {
            let compressor = try PayloadCompressor(policy: policy)
            for _ in 0..<20 {
                let ps = [512, 4096][Int.random(in: 0...1, using: &rng)]
                let bytes = mixedPages(pages: Int.random(in: 0...40, using: &rng), pageSize: ps, rng: &rng)
                let segments = try compressor.encodePages(startPFN: 7, pageSize: ps, bytes: bytes)
                var out: [UInt8] = []
                for s in segments { out += try decompressor.decode(s, pageSize: ps) }
                #expect(out == bytes)
            }
        }
    }
}

@Suite struct PrimitiveTests {
    @Test func isAllZeroFindsAnyNonZeroByte() {
        for length in [0, 1, 7, 8, 9, 63, 64, 65, 200, 4096] {
            let zeros = [UInt8](repeating: 0, count: length + 3)
            #expect(isAllZero(zeros[0..<length]))
            #expect(isAllZero(zeros[3..<(length + 3)]))  // unaligned slice
            for position in Set([0, length / 2, length - 1]) where position >= 0 && length > 0 {
                var bytes = zeros
                bytes[3 + position] = 0x80
                #expect(!isAllZero(bytes[3..<(length + 3)]), "length \(length) position \(position)")
                #expect(isAllZero(bytes[(3 + position + 1)..<(length + 3)]))
            }
        }
    }

    @Test func sha256KnownAnswers() {
        func hex(_ b: [UInt8]) -> String { b.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined() }
        #expect(hex(SHA256Digest.hash([])) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        let digest = SHA256Digest()
        digest.update(Array("a".utf8))
        digest.update(Array("bc".utf8))
        #expect(hex(digest.finalize()) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        // finalize resets: the next stream starts fresh.
        digest.update(Array("abc".utf8))
        #expect(hex(digest.finalize()) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test func errorDescriptionsNameFrameAndField() {
        let samples: [(WireError, [String])] = [
            (.payloadTooLarge(frame: .pages, declared: 99, limit: 10), ["PAGES", "99", "10"]),
            (.truncated(frame: .hello, field: "session id"), ["HELLO", "session id"]),
            (.sequenceGap(expected: 4, got: 6), ["#4", "#6"]),
            (.unexpectedFrame(type: .commit, state: .established), ["COMMIT", "after HELLO"]),
            (.pfnOutsideMemory(frame: .dirtyBitmap, startPFN: 10, count: 5), ["DIRTY_BITMAP", "10..<15"]),
            (.invalidCompressionPolicy("lz4"), ["lz4", "zlib:1"]),
        ]
        for (error, words) in samples {
            for word in words { #expect(error.description.contains(word), "\(error.description)") }
        }
    }
    /// libdeflate returns 0 bytes when it fails; that must be an error,
    /// never an empty deflate payload on the wire.
    @Test func libdeflateFailureIsAnErrorNotAnEmptyPayload() throws {
        let input = [UInt8](repeating: 0x5A, count: 4096)
        #expect(throws: WireError.self) { try FastDeflater(level: 1).compress(input[...], outputCapacity: 2) }
        do {
            _ = try FastDeflater(level: 1).compress(input[...], outputCapacity: 2)
        } catch {
            #expect("\(error)".contains("libdeflate") && "\(error)".contains("4096"), "\(error)")
        }
        // With the bound as room it works and inflates back.
        let out = try FastDeflater(level: 1).compress(input[...])
        #expect(try Inflater().inflate(out, expectedLength: input.count, limit: 1 << 20) == input)
    }
}
