import VFIODevice

/// The simulated v2 driver's private data_fd stream. Opaque to the transport; unlike
/// the region simulator's chunk stream it is one byte stream with no boundaries: the
/// destination may receive it in any segmentation, so the parser buffers partial
/// records and every checksum is taken per record, never per write.
///
/// Records, little-endian:
/// - `0x10` header:  magic "VSV2" (4) · version u16 · state size u64 · block size u32
/// - `0x11` block:   state offset u64 · length u32 · `length` state bytes
/// - `0x12` trailer: state size u64 · block records u64 · stream bytes before the trailer
///                   u64 · checksum of the records before it u64 · checksum of the state u64
enum V2Stream {
    static let tagHeader: UInt8 = 0x10
    static let tagBlock: UInt8 = 0x11
    static let tagTrailer: UInt8 = 0x12
    static let magic: [UInt8] = Array("VSV2".utf8)
    static let version: UInt16 = 1
    static let headerSize = 1 + 4 + 2 + 8 + 4
    static let blockOverhead = 1 + 8 + 4
    static let trailerSize = 1 + 8 * 5
    static let hashSeed: UInt64 = 0xCBF2_9CE4_8422_2325

    static func header(stateSize: Int, blockSize: Int) -> [UInt8] {
        var out: [UInt8] = [tagHeader]
        out += magic
        SimulatedStream.appendLE(&out, UInt64(version), width: 2)
        SimulatedStream.appendLE(&out, UInt64(stateSize), width: 8)
        SimulatedStream.appendLE(&out, UInt64(blockSize), width: 4)
        return out
    }

    static func block(offset: Int, bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [tagBlock]
        out.reserveCapacity(blockOverhead + bytes.count)
        SimulatedStream.appendLE(&out, UInt64(offset), width: 8)
        SimulatedStream.appendLE(&out, UInt64(bytes.count), width: 4)
        out += bytes
        return out
    }

    static func trailer(stateSize: UInt64, records: UInt64, streamBytes: UInt64, streamChecksum: UInt64, stateChecksum: UInt64) -> [UInt8] {
        var out: [UInt8] = [tagTrailer]
        for v in [stateSize, records, streamBytes, streamChecksum, stateChecksum] { SimulatedStream.appendLE(&out, v, width: 8) }
        return out
    }

    static func mix(_ h: UInt64, _ record: [UInt8]) -> UInt64 {
        record.withUnsafeBytes { SimulatedStream.mix(h, $0) }
    }
}

/// The destination driver's view of one RESUMING session: records are applied to a
/// shadow state as they complete; `validate()` is what RESUMING → STOP checks.
struct V2IncomingStream {
    let stateSize: Int
    let blockSize: Int
    let state: DeviceStateMemory
    private var partial: [UInt8] = []
    private var covered: PageBitset
    private(set) var headerSeen = false
    private(set) var trailerSeen = false
    private var trailerValues: (records: UInt64, streamBytes: UInt64, streamChecksum: UInt64, stateChecksum: UInt64)?
    private(set) var records: UInt64 = 0
    private(set) var streamBytes: UInt64 = 0
    private var hash = V2Stream.hashSeed
    /// The first defect; RESUMING → STOP refuses the stream when set.
    private(set) var defect: String?

    init(stateSize: Int, blockSize: Int, buffer: DeviceStateMemory) {
        self.stateSize = stateSize; self.blockSize = blockSize; self.state = buffer
        covered = PageBitset(count: (stateSize + blockSize - 1) / blockSize)
    }

    /// Consumes written bytes. Returns a reason when the stream is refused at once
    /// (a bad header, as mtty refuses on write); later defects wait for `validate`.
    mutating func feed(_ bytes: [UInt8]) -> String? {
        guard defect == nil else { return nil }
        partial += bytes
        var i = 0
        defer { partial.removeFirst(i) }
        while i < partial.count {
            if trailerSeen { defect = "data after the trailer"; return nil }
            switch partial[i] {
            case V2Stream.tagHeader:
                guard partial.count - i >= V2Stream.headerSize else { return nil }
                let record = Array(partial[i..<(i + V2Stream.headerSize)])
                guard !headerSeen, streamBytes == 0 else { defect = "a second stream header"; return nil }
                guard Array(record[1..<5]) == V2Stream.magic else { defect = "bad magic"; return defect }
                let version = SimulatedStream.readLE(record, 5, width: 2)
                let size = SimulatedStream.readLE(record, 7, width: 8)
                let block = SimulatedStream.readLE(record, 15, width: 4)
                guard version == UInt64(V2Stream.version) else { defect = "stream version \(version)"; return defect }
                guard size == UInt64(stateSize), block == UInt64(blockSize) else {
                    defect = "stream for state \(size)/block \(block), this device has \(stateSize)/\(blockSize)"
                    return defect
                }
                headerSeen = true
                account(record)
                i += V2Stream.headerSize
            case V2Stream.tagBlock:
                guard headerSeen else { defect = "block record before the header"; return defect }
                guard partial.count - i >= V2Stream.blockOverhead else { return nil }
                let offset = SimulatedStream.readLE(partial, i + 1, width: 8)
                let length = SimulatedStream.readLE(partial, i + 9, width: 4)
                guard offset % UInt64(blockSize) == 0, length > 0, offset <= UInt64(stateSize), length <= UInt64(stateSize) - offset else {
                    defect = "block record [\(offset), +\(length)) outside the state or unaligned"
                    return nil
                }
                let end = i + V2Stream.blockOverhead + Int(length)
                guard partial.count >= end else { return nil }
                state.replace(at: Int(offset), with: partial[(i + V2Stream.blockOverhead)..<end])
                for b in (Int(offset) / blockSize)..<((Int(offset) + Int(length) + blockSize - 1) / blockSize) { covered[b] = true }
                records += 1
                account(Array(partial[i..<end]))
                i = end
            case V2Stream.tagTrailer:
                guard headerSeen else { defect = "trailer before the header"; return nil }
                guard partial.count - i >= V2Stream.trailerSize else { return nil }
                let r = Array(partial[i..<(i + V2Stream.trailerSize)])
                trailerValues = (SimulatedStream.readLE(r, 9, width: 8), SimulatedStream.readLE(r, 17, width: 8),
                                 SimulatedStream.readLE(r, 25, width: 8), SimulatedStream.readLE(r, 33, width: 8))
                trailerSeen = true
                i += V2Stream.trailerSize
            default:
                defect = "unknown record tag 0x\(String(partial[i], radix: 16)) at stream byte \(streamBytes)"
                return headerSeen ? nil : defect   // not even a header: refused at once
            }
        }
        return nil
    }

    private mutating func account(_ record: [UInt8]) {
        hash = V2Stream.mix(hash, record)
        streamBytes += UInt64(record.count)
    }

    /// nil when the state may be loaded; else why RESUMING → STOP must fail.
    func validate() -> String? {
        if let defect { return defect }
        guard headerSeen else { return "no device data received" }
        guard let t = trailerValues else {
            return "stream incomplete: no trailer after \(streamBytes) bytes" + (partial.isEmpty ? "" : " (+\(partial.count) of a partial record)")
        }
        guard partial.isEmpty else { return "\(partial.count) bytes after the trailer" }
        guard t.records == records, t.streamBytes == streamBytes else {
            return "trailer counts \(t.records) records / \(t.streamBytes) bytes, \(records) / \(streamBytes) arrived"
        }
        guard t.streamChecksum == hash else { return "stream checksum mismatch" }
        guard covered.setCount == covered.count else { return "stream incomplete: \(covered.count - covered.setCount) state blocks never arrived" }
        guard state.checksum() == t.stateChecksum else { return "state checksum mismatch" }
        return nil
    }
}
