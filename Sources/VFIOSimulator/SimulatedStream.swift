import VFIODevice

/// The simulator's own device-data stream format. Opaque to the transport; the
/// destination simulator parses it and validates it only at RESUMING → RUNNING.
///
/// A stream is a sequence of records, each wholly inside one chunk:
/// - `0x00` header:  magic "VSIM" (4) · version u16 · state size u64 · block size u32
/// - `0x01` block:   state offset u64 · length u32 · `length` state bytes
/// - `0x02` trailer: state size u64 · block-record count u64 · stream bytes before the
///                   trailer u64 · checksum u64 of those stream bytes · checksum u64 of
///                   the whole state at stop time
/// All integers little-endian. The header comes first, the trailer last.
enum SimulatedStream {
    static let tagHeader: UInt8 = 0x00
    static let tagBlock: UInt8 = 0x01
    static let tagTrailer: UInt8 = 0x02
    static let magic: [UInt8] = Array("VSIM".utf8)
    static let version: UInt16 = 1
    static let headerSize = 1 + 4 + 2 + 8 + 4
    static let blockRecordOverhead = 1 + 8 + 4
    static let trailerSize = 1 + 8 * 5

    struct Trailer: Equatable {
        var stateSize: UInt64
        var records: UInt64
        var streamBytes: UInt64
        var streamChecksum: UInt64
        var checksum: UInt64
    }

    static func appendHeader(_ out: inout [UInt8], stateSize: Int, blockSize: Int) {
        out.append(tagHeader)
        out += magic
        appendLE(&out, UInt64(version), width: 2)
        appendLE(&out, UInt64(stateSize), width: 8)
        appendLE(&out, UInt64(blockSize), width: 4)
    }

    static func appendBlock(_ out: inout [UInt8], offset: Int, from state: DeviceStateMemory, range: Range<Int>) {
        out.append(tagBlock)
        appendLE(&out, UInt64(offset), width: 8)
        appendLE(&out, UInt64(range.count), width: 4)
        state.append(range, to: &out)
    }

    static func appendTrailer(_ out: inout [UInt8], _ t: Trailer) {
        out.append(tagTrailer)
        appendLE(&out, t.stateSize, width: 8)
        appendLE(&out, t.records, width: 8)
        appendLE(&out, t.streamBytes, width: 8)
        appendLE(&out, t.streamChecksum, width: 8)
        appendLE(&out, t.checksum, width: 8)
    }

    static func appendLE(_ out: inout [UInt8], _ value: UInt64, width: Int) {
        for i in 0..<width { out.append(UInt8(truncatingIfNeeded: value >> (8 * UInt64(i)))) }
    }

    static func readLE(_ bytes: [UInt8], _ at: Int, width: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<width { v |= UInt64(bytes[at + i]) << (8 * UInt64(i)) }
        return v
    }

    /// 64-bit checksum of the device state, eight bytes per step (FNV-1a style mixing).
    static func checksum(_ bytes: [UInt8]) -> UInt64 {
        bytes.withUnsafeBytes { checksum($0) }
    }

    static func checksum(_ raw: UnsafeRawBufferPointer) -> UInt64 {
        mix(0xCBF2_9CE4_8422_2325 ^ UInt64(raw.count), raw)
    }

    /// Folds `raw` into `h`: 32 bytes per step in four independent lanes (FNV-1a style
    /// mixing; one chain of dependent multiplies ran at a quarter of the speed, 4–8 % of
    /// each side's CPU in a benchmark migration, which a real device does not spend),
    /// then the lanes folded together, the remaining words and the tail bytes.
    static func mix(_ seed: UInt64, _ raw: UnsafeRawBufferPointer) -> UInt64 {
        let prime: UInt64 = 0x0000_0100_0000_01B3
        var lanes = (seed, seed ^ 0x9E37_79B9_7F4A_7C15, seed ^ 0xC2B2_AE3D_27D4_EB4F, seed ^ 0x1656_67B1_9E37_79F9)
        var i = 0
        func step(_ h: inout UInt64, _ at: Int) {
            h = (h ^ raw.loadUnaligned(fromByteOffset: at, as: UInt64.self)) &* prime
            h ^= h >> 29
        }
        while i + 32 <= raw.count {
            step(&lanes.0, i); step(&lanes.1, i + 8); step(&lanes.2, i + 16); step(&lanes.3, i + 24)
            i += 32
        }
        var h = lanes.0
        for lane in [lanes.1, lanes.2, lanes.3] { h = (h ^ lane) &* prime; h ^= h >> 29 }
        while i + 8 <= raw.count {
            step(&h, i)
            i += 8
        }
        while i < raw.count {
            h = (h ^ UInt64(raw[i])) &* prime
            i += 1
        }
        return h
    }
}

/// Running checksum over every stream byte before the trailer: a block later
/// overwritten by a re-sent copy would otherwise hide its corruption.
struct StreamHash {
    private(set) var value: UInt64 = 0xCBF2_9CE4_8422_2325

    /// Word-wise FNV-style mixing, so the simulator keeps up with the transport.
    /// Both ends update with the same chunks (the protocol keeps chunk
    /// boundaries), so a per-update tail is deterministic.
    mutating func update(_ bytes: ArraySlice<UInt8>) {
        let h = value
        value = bytes.withUnsafeBytes { SimulatedStream.mix(h, $0) }
    }
}

/// Destination-side state of one incoming stream: applies block records to a copy of
/// the state as chunks arrive and remembers the first defect, reported at RUNNING.
struct IncomingStream {
    let stateSize: Int
    let blockSize: Int
    let state: DeviceStateMemory
    var covered: [Bool]
    var coveredCount = 0
    var headerSeen = false
    var trailer: SimulatedStream.Trailer?
    var records: UInt64 = 0
    var streamBytes: UInt64 = 0
    var hash = StreamHash()
    var defect: String?

    /// `buffer` may hold an earlier session's bytes: every block must arrive
    /// again before `validate` passes, so nothing stale can be applied.
    init(stateSize: Int, blockSize: Int, buffer: DeviceStateMemory) {
        precondition(buffer.count == stateSize)
        self.stateSize = stateSize
        self.blockSize = blockSize
        state = buffer
        let blocks = (stateSize + blockSize - 1) / blockSize
        covered = [Bool](repeating: false, count: blocks)
    }

    mutating func consume(_ chunk: [UInt8], index: Int) {
        guard defect == nil else { return }
        if let problem = parse(chunk) { defect = "chunk \(index): \(problem)" }
        streamBytes += UInt64(chunk.count)
    }

    /// nil when the chunk is well formed so far; else what is wrong with it.
    private mutating func parse(_ chunk: [UInt8]) -> String? {
        var i = 0
        while i < chunk.count {
            if trailer != nil { return "data after the trailer" }
            let tag = chunk[i]
            switch tag {
            case SimulatedStream.tagHeader:
                guard !headerSeen, streamBytes == 0, i == 0 else { return "stream header not at the start" }
                guard chunk.count - i >= SimulatedStream.headerSize else { return "truncated stream header" }
                guard Array(chunk[(i + 1)..<(i + 5)]) == SimulatedStream.magic else { return "bad magic" }
                let version = SimulatedStream.readLE(chunk, i + 5, width: 2)
                let size = SimulatedStream.readLE(chunk, i + 7, width: 8)
                let block = SimulatedStream.readLE(chunk, i + 15, width: 4)
                guard version == UInt64(SimulatedStream.version) else { return "stream version \(version) unsupported" }
                guard size == UInt64(stateSize), block == UInt64(blockSize) else {
                    return "stream for state size \(size)/block \(block), this device has \(stateSize)/\(blockSize)"
                }
                headerSeen = true
                i += SimulatedStream.headerSize
            case SimulatedStream.tagBlock:
                guard headerSeen else { return "block record before the stream header" }
                guard chunk.count - i >= SimulatedStream.blockRecordOverhead else { return "truncated block record header" }
                let offset = SimulatedStream.readLE(chunk, i + 1, width: 8)
                let length = SimulatedStream.readLE(chunk, i + 9, width: 4)
                let body = i + SimulatedStream.blockRecordOverhead
                guard UInt64(chunk.count - body) >= length else { return "truncated block record" }
                guard offset <= UInt64(stateSize), length <= UInt64(stateSize) - offset, length > 0,
                      offset % UInt64(blockSize) == 0,
                      length % UInt64(blockSize) == 0 || offset + length == UInt64(stateSize) else {
                    return "block record [\(offset), +\(length)) outside the state or not block aligned"
                }
                let o = Int(offset), n = Int(length)
                state.replace(at: o, with: chunk[body..<(body + n)])
                for b in (o / blockSize)..<((o + n + blockSize - 1) / blockSize) where !covered[b] {
                    covered[b] = true
                    coveredCount += 1
                }
                records += 1
                i = body + n
            case SimulatedStream.tagTrailer:
                guard headerSeen else { return "trailer before the stream header" }
                guard chunk.count - i == SimulatedStream.trailerSize else { return "trailer not at the end of its chunk" }
                trailer = SimulatedStream.Trailer(
                    stateSize: SimulatedStream.readLE(chunk, i + 1, width: 8),
                    records: SimulatedStream.readLE(chunk, i + 9, width: 8),
                    streamBytes: SimulatedStream.readLE(chunk, i + 17, width: 8),
                    streamChecksum: SimulatedStream.readLE(chunk, i + 25, width: 8),
                    checksum: SimulatedStream.readLE(chunk, i + 33, width: 8))
                let before = streamBytes + UInt64(i)
                guard trailer!.streamBytes == before else {
                    return "trailer counts \(trailer!.streamBytes) stream bytes, \(before) arrived"
                }
                hash.update(chunk[0..<i])
                guard trailer!.streamChecksum == hash.value else { return "stream checksum mismatch" }
                return nil
            default:
                return "unknown record tag 0x\(String(tag, radix: 16)) at chunk byte \(i)"
            }
        }
        hash.update(chunk[...])
        return nil
    }

    /// The defect that forbids RESUMING → RUNNING, or nil when the state may be applied.
    func validate() -> String? {
        if let defect { return defect }
        guard headerSeen else { return "no device data received" }
        guard let trailer else { return "stream incomplete: no trailer after \(streamBytes) bytes" }
        guard trailer.records == records else { return "trailer counts \(trailer.records) block records, \(records) arrived" }
        guard coveredCount == covered.count else {
            return "stream incomplete: \(covered.count - coveredCount) of \(covered.count) state blocks never arrived"
        }
        guard state.checksum() == trailer.checksum else { return "state checksum mismatch" }
        return nil
    }
}
