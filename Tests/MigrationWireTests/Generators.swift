@testable import MigrationWire

/// Random but valid frame bodies and sessions, driven by a SeededRNG.
struct FrameGenerator {
    var rng: SeededRNG
    init(seed: UInt64) { rng = SeededRNG(seed: seed) }

    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &rng) }
    mutating func u64() -> UInt64 { rng.next() }
    /// Mostly small values, sometimes the edges: decoders break at the edges.
    mutating func edgyU64() -> UInt64 {
        switch int(0...5) {
        case 0: return 0
        case 1: return UInt64.max
        case 2: return UInt64(UInt32.max)
        default: return UInt64(int(0...100_000))
        }
    }
    mutating func edgyU32() -> UInt32 { UInt32(truncatingIfNeeded: [0, 1, UInt64(UInt32.max), UInt64(int(0...65536))][int(0...3)]) }
    mutating func pageSize() -> UInt32 { [512, 4096, 65536, 2 << 20][int(0...3)] }
    mutating func string(maxBytes: Int) -> String {
        let alphabet = Array("abcXYZ019-_:/ é√🚀")
        var s = ""
        for _ in 0..<int(0...maxBytes) {
            let c = alphabet[int(0...(alphabet.count - 1))]
            if s.utf8.count + String(c).utf8.count > maxBytes { break }
            s.append(c)
        }
        return s
    }

    mutating func hello(role: Role? = nil) -> Hello {
        Hello(sessionID: rng.bytes(16), role: role ?? (rng.chance(0.5) ? .source : .destination),
              encodings: (0..<int(0...3)).map { _ in Encoding.allCases[int(0...1)] },  // zstd: version 2 only
              devices: (0..<int(0...5)).map { _ in DeviceDescriptor(name: string(maxBytes: 40), pageSize: pageSize(), compatibility: string(maxBytes: 80)) },
              memory: (0..<int(0...4)).map { _ in MemoryRange(startPFN: UInt64(int(0...1 << 40)), pageCount: UInt64(int(1...1 << 30)), pageSize: pageSize()) })
    }

    /// Any body, without session context (the page-range fields are arbitrary).
    mutating func body() -> FrameBody {
        switch int(0...11) {
        case 0: return .hello(hello())
        case 1:
            let payload = rng.bytes(int(0...600))
            return rng.chance(0.5)
                ? .deviceData(DeviceData(phase: rng.chance(0.5) ? .precopy : .stopcopy, encoding: .raw, originalLength: UInt32(payload.count), payload: payload))
                : .deviceData(DeviceData(phase: .stopcopy, encoding: rng.chance(0.5) ? .deflate : .zstd, originalLength: UInt32(int(0...1 << 20)), payload: payload))
        case 2: return .dirtyBitmap(dirtyBitmap(start: UInt64(int(0...1 << 40)), limit: 5000))
        case 3: return .pages(pages(start: UInt64(int(0...1 << 40)), span: 64, pageSize: [512, 1024][int(0...1)]))
        case 4: return .iterationEnd(IterationEnd(iteration: edgyU32(), pendingBytes: edgyU64(), dirtyPages: edgyU64()))
        case 5: return .deviceEnd(DeviceEnd(totalBytes: edgyU64(), chunkCount: edgyU64(), sha256: rng.bytes(32)))
        case 6: return .complete
        case 7: return .ready
        case 8: return .commit
        case 9: return .resumed
        case 10:
            let reasons: [AbortReason] = [.unspecified, .incompatible, .protocolError, .deviceError, .digestMismatch, .cancelled, .timeout, .internalError]
            return .abort(Abort(reason: reasons[int(0...7)], message: string(maxBytes: 200)))
        default: return .keepAlive
        }
    }

    /// Any version-2 resumption body; with `streams` ≥ 2 (version 3) positions carry the stream tail.
    mutating func resumptionBody(streams: Int = 1) -> ResumptionBody {
        let position = StreamPosition(nextSequence: UInt64(int(1...1 << 40)), deviceBytes: (0..<int(0...5)).map { _ in edgyU64() },
                                      streamSequences: (1..<streams).map { _ in edgyU64() })
        switch int(0...3) {
        case 0: return .resume(Resume(sessionID: rng.bytes(16), role: rng.chance(0.5) ? .source : .destination, proof: rng.bytes(32)))
        case 1:
            let progress: [DestinationProgress] = [.receiving, .ready, .resuming, .resumed]
            return .resumeAccept(ResumeAccept(progress: progress[int(0...3)], destinationNextSequence: edgyU64(), position: position))
        case 2:
            let reasons: [RefusalReason] = [.unspecified, .unknownSession, .wrongIdentity, .badProof, .busy, .streamRefused]
            return .refuse(Refusal(reason: reasons[int(0...5)], message: string(maxBytes: 200)))
        default: return .ack(position)
        }
    }

    mutating func dirtyBitmap(start: UInt64, limit: Int, pageSize: UInt64 = 4096) -> DirtyBitmap {
        let total = UInt64(int(0...limit))
        let copied: DirtyCopied
        switch int(0...2) {
        case 0: copied = .none
        case 1: copied = .all
        default:
            var bits = rng.bytes(Int((total + 7) / 8))
            if total % 8 != 0, !bits.isEmpty { bits[bits.count - 1] &= UInt8((1 << (total % 8)) - 1) }
            copied = .bitmap(bits)
        }
        return DirtyBitmap(startPFN: start, pageSize: pageSize, totalPFNs: total, copied: copied)
    }

    /// Up to `span` pages from `start` in segments of random encodings (payloads
    /// are not real deflate or zstd streams: the decoder does not inflate).
    /// `copies` (version 6): some segments are copies from `copies` ranges (§17).
    mutating func pages(start: UInt64, span: Int, pageSize: Int, zstd: Bool = true, copies: [MemoryRange] = []) -> Pages {
        var segments: [PageSegment] = []
        var pfn = start
        var left = int(0...span)
        while left > 0 {
            let count = int(1...min(left, 8))
            if !copies.isEmpty, rng.chance(0.3) {
                segments.append(.copy(startPFN: pfn, pageCount: UInt32(count), from: copySource(in: copies, avoiding: pfn, count: count)))
                pfn += UInt64(count) + UInt64(int(0...3))
                left -= count
                continue
            }
            let encoding: PageEncoding = [.zero, .raw, .deflate, .zstd][int(0...(zstd ? 3 : 2))]
            let payload: [UInt8] = switch encoding {
            case .zero: []
            case .raw: rng.bytes(count * pageSize)
            case .deflate, .zstd, .zstdLane: rng.bytes(int(1...200))
            case .copy: preconditionFailure("copies are made above")
            }
            segments.append(PageSegment(startPFN: pfn, pageCount: UInt32(count), encoding: encoding, payload: payload))
            pfn += UInt64(count) + UInt64(int(0...3))
            left -= count
        }
        return Pages(pageSize: UInt32(pageSize), segments: segments)
    }

    /// A copy's first source PFN: `count` (≤ 8) pages inside one of `ranges` (each at
    /// least 24 pages), clear of the `count` pages at `target`.
    mutating func copySource(in ranges: [MemoryRange], avoiding target: UInt64, count: Int) -> UInt64 {
        let range = ranges[int(0...(ranges.count - 1))]
        let n = UInt64(count)
        var source = range.startPFN + UInt64(int(0...Int(range.pageCount - n)))
        // Overlapping the target: the other side of it, or the range's other end.
        if source < target + n && target < source + n {
            source = target >= range.startPFN + n ? range.startPFN : range.startPFN + range.pageCount - n
        }
        return source
    }

    /// A complete, valid source stream: HELLO, iterations, stop-and-copy, DEVICE_END, COMPLETE, COMMIT.
    /// Small page sizes keep it fast; `compressor` (if any) produces real payloads.
    /// Version 4 with `lanes`: the HELLO lists zstd lanes and their count, and the
    /// compressor's zstd pages continue a lane picked at random (§15).
    mutating func sourceSession(compressor: PayloadCompressor? = nil, version: ProtocolVersion = .v1,
                                lanes: [ZstdLane] = []) throws -> StreamBuilder {
        let pageSize = 512
        let memory = [MemoryRange(startPFN: 0, pageCount: 256, pageSize: UInt32(pageSize)),
                      MemoryRange(startPFN: 256, pageCount: 64, pageSize: UInt32(pageSize)),  // adjacent: spans may cross
                      MemoryRange(startPFN: 4096, pageCount: 128, pageSize: UInt32(pageSize))]
        let devices = int(1...3)
        // A zstd compressor's payloads need zstd in the HELLO (generated pages may use it
        // too), and zstd needs version 2 (PROTOCOL.md §10).
        let zstd = version >= .v2
        var encodings: [Encoding] = !zstd ? [.raw, .deflate] : lanes.isEmpty ? [.raw, .deflate, .zstd] : [.raw, .deflate, .zstd, .zstdLanes]
        if version >= .v5 { encodings.append(.xxh3Digest) }  // §16: DEVICE_END's digest, no payload encoding
        let copies = version >= .v6 ? memory : []  // §17: copy segments, each inside one range
        if !copies.isEmpty { encodings.append(.pageCopies) }
        var s = StreamBuilder.source(devices: devices, memory: memory, encodings: encodings, version: version, lanes: UInt16(lanes.count))
        for iteration in 0..<int(0...3) {
            for _ in 0..<int(1...6) {
                switch int(0...4) {
                case 0, 1:
                    let chunk = rng.chance(0.5) ? textBytes(int(0...3000)) : rng.bytes(int(0...300))
                    let (encoding, payload) = try compressor?.encode(chunk) ?? (.raw, chunk)
                    s.add(.deviceData(DeviceData(phase: .precopy, encoding: encoding, originalLength: UInt32(chunk.count), payload: payload)), device: UInt32(int(0...(devices - 1))))
                case 2:
                    let start = UInt64(int(0...200))
                    s.add(.dirtyBitmap(dirtyBitmap(start: start, limit: 100, pageSize: UInt64(pageSize))), device: UInt32(int(0...(devices - 1))))
                case 3:
                    let start = UInt64([0, 200, 4096][int(0...2)])
                    if let compressor {
                        let bytes = mixedPages(pages: int(1...24), pageSize: pageSize, rng: &rng)
                        let lane = lanes.isEmpty ? nil : lanes[int(0...(lanes.count - 1))]
                        let segments = try compressor.encodePages(startPFN: start, pageSize: pageSize, bytes: bytes, lane: lane)
                        s.add(.pages(Pages(pageSize: UInt32(pageSize), segments: copySegments(copies) + segments)))
                    } else {
                        s.add(.pages(pages(start: start, span: 24, pageSize: pageSize, zstd: zstd, copies: copies)))
                    }
                default: s.add(.keepAlive)
                }
            }
            s.add(.iterationEnd(IterationEnd(iteration: UInt32(iteration), pendingBytes: edgyU64(), dirtyPages: edgyU64())))
        }
        for d in 0..<devices {
            for _ in 0..<int(0...2) {
                let chunk = rng.bytes(int(1...200))
                s.add(.deviceData(DeviceData(phase: .stopcopy, encoding: .raw, originalLength: UInt32(chunk.count), payload: chunk)), device: UInt32(d))
            }
        }
        s.finishDevices(devices)
        if rng.chance(0.3) { s.add(.keepAlive) }
        s.add(rng.chance(0.8) ? .commit : .abort(Abort(reason: .timeout, message: "no READY in time")))
        return s
    }

    /// Version 6, a frame from a compressor: 0–2 copy segments put first (where the payload
    /// mutations reach them), each writing pages of `ranges` from others (§17).
    mutating func copySegments(_ ranges: [MemoryRange]) -> [PageSegment] {
        guard !ranges.isEmpty else { return [] }
        return (0..<int(0...2)).map { _ in
            let count = int(1...8)
            let range = ranges[int(0...(ranges.count - 1))]
            let target = range.startPFN + UInt64(int(0...Int(range.pageCount) - count))
            return .copy(startPFN: target, pageCount: UInt32(count), from: copySource(in: ranges, avoiding: target, count: count))
        }
    }

    /// Version 3: the memory an extra stream's pages lie in (stream 1 of `testRouting` owns it).
    static let joinedMemory = [MemoryRange(startPFN: 512, pageCount: 64, pageSize: 512)]

    /// Version 3: extra stream 1 (`testRouting`): PAGES of PFNs it owns, KEEPALIVE, then STREAM_END.
    /// `copies` (version 6): some segments copy pages of its memory (§17).
    mutating func joinedStreamSession(compressor: PayloadCompressor? = nil, lanes: [ZstdLane] = [], copies: Bool = false) throws -> StreamBuilder {
        var s = StreamBuilder()
        let copyRanges = copies ? FrameGenerator.joinedMemory : []
        for _ in 0..<int(1...6) {
            if rng.chance(0.25) { s.add(.keepAlive); continue }
            let start = UInt64(512 + int(0...8))
            if let compressor {
                let bytes = mixedPages(pages: int(1...24), pageSize: 512, rng: &rng)
                let lane = lanes.isEmpty ? nil : lanes[int(0...(lanes.count - 1))]
                let segments = try compressor.encodePages(startPFN: start, pageSize: 512, bytes: bytes, lane: lane)
                s.add(.pages(Pages(pageSize: 512, segments: copySegments(copyRanges) + segments)))
            } else {
                // With copies: a shorter span keeps every page inside `joinedMemory` (a valid stream).
                s.add(.pages(pages(start: start, span: copies ? 12 : 24, pageSize: 512, copies: copyRanges)))
            }
        }
        s.add(.streamEnd(StreamEnd(streamIndex: 1, frameCount: s.encoder.nextSequence)))
        return s
    }

    /// Version 3, one side of a join (§14.3): the destination's RESUME and JOIN_ACCEPT, or the
    /// source's JOIN and its first numbered frames; sometimes a refusal.
    mutating func joinHandshake() -> (bytes: [UInt8], offsets: [Int], peer: Role) {
        let peer: Role = rng.chance(0.5) ? .source : .destination
        var s = StreamBuilder()
        if rng.chance(0.15) {
            s.add(.refuse(Refusal(reason: .streamRefused, message: string(maxBytes: 30))))
            return (s.bytes, s.offsets, peer)
        }
        let index = UInt32(int(1...3))
        if peer == .destination {
            s.add(.resume(Resume(sessionID: testSessionID, role: .destination, proof: rng.bytes(32))))
            s.add(.joinAccept(JoinAccept(streamIndex: index)))
        } else {
            s.add(.join(Join(sessionID: testSessionID, streamIndex: index, proof: rng.bytes(32))))
            s.add(.keepAlive)
        }
        return (s.bytes, s.offsets, peer)
    }

    /// Version 2 adds ACKs, growing as a destination's would; version 3 with `streams`
    /// ≥ 2 adds each extra stream's position to them.
    mutating func destinationSession(version: ProtocolVersion = .v1, streams: Int = 1) -> StreamBuilder {
        var s = StreamBuilder.destination(version: version)
        var position = StreamPosition(nextSequence: 1, deviceBytes: [0, 0], streamSequences: Array(repeating: 0, count: streams - 1))
        func acknowledge(_ s: inout StreamBuilder, _ gen: inout FrameGenerator) {
            guard version >= .v2 else { return }
            position.nextSequence += UInt64(gen.int(0...40))
            position.deviceBytes = position.deviceBytes.map { $0 + UInt64(gen.int(0...5000)) }
            position.streamSequences = position.streamSequences.map { $0 + UInt64(gen.int(0...40)) }
            s.add(.ack(position))
        }
        for _ in 0..<int(0...2) { s.add(.keepAlive); acknowledge(&s, &self) }
        if rng.chance(0.2) {
            s.add(.abort(Abort(reason: .digestMismatch, message: "device 0 digest differs")))
            return s
        }
        s.add(.ready)
        acknowledge(&s, &self)
        s.add(.resumed)
        return s
    }

    /// One side of a resume handshake: the destination's (RESUME, RESUME_ACCEPT, then
    /// numbered frames) or the source's (RESUME, then its replay); sometimes a refusal.
    /// With `streams` ≥ 2 (version 3) RESUME_ACCEPT and ACK carry the stream tail.
    mutating func resumeHandshake(streams: Int = 1) throws -> (bytes: [UInt8], offsets: [Int], peer: Role) {
        let peer: Role = rng.chance(0.5) ? .source : .destination
        var s = StreamBuilder()
        for _ in 0..<7 { _ = try s.encoder.encode(.keepAlive) }  // the stream stood at #7
        if rng.chance(0.15) {
            s.add(.refuse(Refusal(reason: .busy, message: string(maxBytes: 30))))
            return (s.bytes, s.offsets, peer)
        }
        s.add(.resume(Resume(sessionID: testSessionID, role: peer, proof: rng.bytes(32))))
        if peer == .destination {
            let tail = (1..<streams).map { _ in UInt64(int(0...99)) }
            s.add(.resumeAccept(ResumeAccept(progress: .receiving, destinationNextSequence: 7,
                                             position: StreamPosition(nextSequence: 40, deviceBytes: [UInt64(int(0...9999)), 0], streamSequences: tail))))
            s.add(.ack(StreamPosition(nextSequence: 41, deviceBytes: [10_000, 1], streamSequences: tail.map { $0 + 100 })))
        } else {
            s.add(.keepAlive)
        }
        return (s.bytes, s.offsets, peer)
    }
}
