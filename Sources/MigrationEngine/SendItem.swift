import MigrationWire
import VFIODevice

/// What the source's producer hands to the compression workers.
enum SendItem: Sendable {
    case chunk(device: UInt32, phase: Phase, part: ChunkPart, bytes: [UInt8])
    /// Read and encode these guest pages in the worker. `copyGeneration`: in a
    /// session with page copies (§17), the batch's generation in its stream's table.
    case pages(startPFN: UInt64, count: Int, copyGeneration: UInt64? = nil)
    case control(FrameBody, device: UInt32)

    /// The frame for this item, serialised whole on a worker thread with its own
    /// compressor; the writer only numbers it.
    /// `lane`: the worker's zstd lane of this stream (version 4), for pages only.
    /// `copies`: the stream's table, in a session with page copies.
    func encode(compressor: PayloadCompressor, encoding: SendEncoding, memory: GuestMemory?, counters: Counters,
                lane: ZstdLane? = nil, copies: PageCopyTable? = nil) throws(MigrationFailure) -> SendOutput {
        switch self {
        case .chunk(let device, let phase, let part, let bytes):
            guard let length = UInt32(exactly: bytes.count) else {
                throw MigrationFailure(WireError.sizeNotRepresentable(what: "DEVICE_DATA piece", bytes: UInt64(bytes.count), limit: UInt64(UInt32.max)))
            }
            let encoded = try encoding.encodeBatch(compressor) { (choice) throws(WireError) in try compressor.encode(bytes, choice: choice) }
            let (used, payload) = encoded.value
            let body = FrameBody.deviceData(DeviceData(phase: phase, encoding: used, originalLength: length, payload: payload, part: part))
            return SendOutput(frame: try prepare(body, device: device), rawBytes: UInt64(bytes.count), coded: encoded.coded, kind: .deviceData)
        case .pages(let start, let count, let generation):
            precondition(generation == nil || copies != nil, "a batch of a session with page copies needs the stream's table")
            return try encodePages(startPFN: start, count: count, compressor: compressor, encoding: encoding, memory: memory!,
                                   counters: counters, lane: lane, copies: generation.map { (copies!, $0) })
        case .control(let body, let device):
            return SendOutput(frame: try prepare(body, device: device), rawBytes: 0)
        }
    }

    /// One PAGES frame built in place, straight from the guest mapping (no copy of
    /// the pages before the frame's own). With `copies` (§17): pages the stream's
    /// table says the destination holds go as copy segments, and the frame's output
    /// lists what it sent with its bytes, with the batch's generation, for the table.
    private func encodePages(startPFN start: UInt64, count: Int, compressor: PayloadCompressor, encoding: SendEncoding,
                             memory: GuestMemory, counters: Counters, lane: ZstdLane?,
                             copies: (table: PageCopyTable, generation: UInt64)?) throws(MigrationFailure) -> SendOutput {
        let built = try deviceCall(nil) { () throws(DeviceError) in
            try memory.withPages(startPFN: start, count: count) { (pages: RawSpan) throws(MigrationFailure) in
                try encoding.encodeBatch(compressor) { (choice) throws(WireError) -> (PreparedFrame, [SentPage]?) in
                    // Raw pages stay in the mapping: the writer sends them from there.
                    var frame = PagesFrameBuilder(pageSize: memory.pageSize, pageCount: count, borrowingRawPages: true)
                    guard let table = copies?.table else {
                        try compressor.encodePages(startPFN: start, pageSize: memory.pageSize, pages: pages, choice: choice, into: &frame, lane: lane)
                        return (try frame.finish(), nil)
                    }
                    // A last check against a fingerprint collision: the page named holds the same
                    // bytes in the guest now (one written since it was sent fails it; no copy then).
                    var found = PageCopies(fingerprinter: table.fingerprinter, mayHold: table.mayHold, find: table.find) { source, page in
                        (try? memory.pagesEqual(source, count: 1, page)) ?? false
                    }
                    try compressor.encodePages(startPFN: start, pageSize: memory.pageSize, pages: pages, choice: choice, into: &frame,
                                               lane: lane, copies: &found)
                    return (try frame.finish(), found.sent)
                }
            }
        }
        let encoded = try built.get()
        let (frame, sent) = encoded.value
        counters.addPages(frame)
        var output = SendOutput(frame: frame, rawBytes: UInt64(count * memory.pageSize), coded: encoded.coded)
        if let copies, let sent { output.sentPages = (copies.generation, sent) }
        return output
    }

    private func prepare(_ body: FrameBody, device: UInt32) throws(MigrationFailure) -> PreparedFrame {
        do throws(WireError) { return try FrameEncoder.prepare(body, device: device) } catch { throw MigrationFailure(error) }
    }
}

/// A worker's result: one frame for the writer, serialised and waiting for its number.
struct SendOutput: Sendable {
    var frame: PreparedFrame
    /// The payload bytes (before compression) this frame carries, as counted in
    /// `Counters.produced`; 0 for control frames.
    var rawBytes: UInt64
    /// `auto` chose a codec level for this batch (what DeliveryArms measures).
    var coded = false
    /// Device state or pages: DeliveryArms measures each kind apart.
    var kind = DeliveryArms.Kind.pages
    /// Page copies (§17): the pages this frame sent with their bytes, and its batch's
    /// generation, for the stream's table once the frame is numbered.
    var sentPages: (generation: UInt64, pages: [SentPage])?
    /// A PAGES frame with a zstd lane segment: the retained window keeps its bytes (§15.4).
    var retainsBytes: Bool {
        if case .pages(let p) = frame.body { p.hasLaneSegments } else { false }
    }
}
