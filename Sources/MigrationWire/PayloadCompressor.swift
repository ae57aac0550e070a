/// Applies a CompressionPolicy to one buffer: returns raw when compression does not pay (≥ 95 %).
/// One per worker thread (it owns its codecs' contexts and its counters).
///
/// `auto` first deflates a small sample (four 1 KiB slices spread over the buffer,
/// level 1): if the sample does not shrink below 95 % the buffer goes raw without a
/// full deflate, so random or already-compressed data costs ~4 KiB of deflate per
/// buffer instead of all of it. A byte-histogram entropy estimate was the other
/// candidate; it misses repetition (LZ matches) and over-rates text, the sample
/// does not. Buffers under `probeMinimum` are simply deflated: the probe would cost as much.
/// Only for deflate: zstd stores incompressible blocks raw by itself at 2 GB/s, and the
/// sample misjudged 3 of the benchmark's 256 MiB of device state's 256 buffers as
/// random, which then went raw though zlib alone saves 1.5 MB of them (issue 14).
/// Under `auto` the caller may pass a `CodecChoice` per batch (the engine's
/// `EncodingChooser`: raw on a fast link, a codec level on a slow one).
public final class PayloadCompressor {
    /// What the compressor did; the engine reports these, tests observe the probe with them.
    public struct Counters: Sendable, Equatable {
        public var buffers = 0
        /// Samples deflated by the `auto` probe.
        public var probes = 0
        /// Buffers sent raw because the probe found them incompressible (no full deflate).
        public var probeRejections = 0
        /// Whole buffers compressed (deflate or zstd).
        public var fullDeflates = 0
        /// Whole buffers compressed and then sent raw because the result was ≥ 95 % of the input.
        public var deflateNotWorthIt = 0
        /// Pages `auto` sent raw on sight (they look like random data), never deflated.
        public var pagesLookingRandom = 0
        /// Buffers sent raw because the caller chose raw for them (a link faster than the codec).
        public var rawByChoice = 0
        public var bytesIn = 0
        public var bytesOut = 0
        /// Input and output of whole-buffer compressions and the time they took: what
        /// the engine measures the codec's rate and ratio from.
        public var codecBytesIn = 0
        public var codecBytesOut = 0
        public var codecTime = Duration.zero
        public init() {}
    }

    /// Non-zero runs of pages are cut into segments of at most this many bytes, so one
    /// incompressible page does not force a large neighbour raw and workers get even jobs.
    public static let maxSegmentBytes = 256 << 10
    /// zstd segments may be longer: zstd stores an incompressible block raw by itself, so
    /// a random page costs nothing extra, and each segment starts without context, so a
    /// longer one keeps more of it (level 3: 1.3 % fewer bytes on the benchmark corpus).
    public static let maxZstdSegmentBytes = 1 << 20
    /// Zero runs carry no data; this only bounds what a receiver materialises per segment.
    public static let maxZeroSegmentBytes = 4 << 20
    static let probeSliceBytes = 1024
    static let probeSlices = 4
    static let probeMinimum = 16 << 10

    public let policy: CompressionPolicy
    /// Whether the destination accepts zstd: if not, zstd levels fall back to deflate.
    public let zstdAccepted: Bool
    /// What a batch is compressed with when the caller does not choose (nil: raw).
    public let defaultCodec: PayloadCodec?
    public private(set) var counters = Counters()
    private var compressors: [PayloadCodec: any BufferCompressor] = [:]
    private let clock = ContinuousClock()
    /// Where a run of lent pages is copied before a codec reads it (reused).
    private var stableRun: [UInt8] = []

    public init(policy: CompressionPolicy, zstdAccepted: Bool = false) throws(WireError) {
        self.policy = policy
        self.zstdAccepted = zstdAccepted
        switch policy {
        case .none: defaultCodec = nil
        case .zlib(let level):
            guard (1...9).contains(level) else { throw WireError.invalidCompressionLevel(level) }
            defaultCodec = .deflate(level: level, zlib: true)
        case .zstd(let level):
            guard zstdLevels.contains(level), level != 0 else { throw WireError.invalidZstdLevel(level) }
            defaultCodec = PayloadCompressor.resolve(.zstd(level: level), zstdAccepted: zstdAccepted)
        // auto without a chooser: libdeflate level 1 (same wire format as zlib level 1, twice the speed).
        case .auto: defaultCodec = .deflate(level: 1)
        }
        if let defaultCodec { compressors[defaultCodec] = try PayloadCompressor.make(defaultCodec) }
    }

    /// zstd → raw DEFLATE when the destination does not accept zstd (the baseline every
    /// peer has): negative and low levels become libdeflate 1, higher ones its level up to 9.
    public static func resolve(_ codec: PayloadCodec, zstdAccepted: Bool) -> PayloadCodec {
        guard case .zstd(let level) = codec, !zstdAccepted else { return codec }
        return .deflate(level: min(max(level, 1), 9))
    }

    private static func make(_ codec: PayloadCodec) throws(WireError) -> any BufferCompressor {
        switch codec {
        case .deflate(let level, true): try Deflater(level: level)
        case .deflate(let level, false): try FastDeflater(level: level)
        case .zstd(let level): try ZstdCompressor(level: level)
        }
    }

    private func compressor(_ codec: PayloadCodec) throws(WireError) -> any BufferCompressor {
        if let c = compressors[codec] { return c }
        let c = try PayloadCompressor.make(codec)
        compressors[codec] = c
        return c
    }

    public func encode(_ input: [UInt8], choice: CodecChoice? = nil) throws(WireError) -> (Encoding, [UInt8]) {
        try encode(input[...], choice: choice)
    }

    /// As `encode(_:)` on part of a buffer, without copying it first.
    public func encode(_ input: ArraySlice<UInt8>, choice: CodecChoice? = nil) throws(WireError) -> (Encoding, [UInt8]) {
        switch try encode(input.span.bytes, probe: true, choice: choice) {
        case .raw: (.raw, Array(input))
        case .compressed(let encoding, let payload): (encoding, payload)
        }
    }

    /// What one buffer became: raw (the caller copies its input once, where it
    /// goes) or a compressed payload.
    private enum Encoded {
        case raw
        case compressed(Encoding, [UInt8])
    }

    /// `probe: false` when the caller already classified the data (pages).
    private func encode(_ input: RawSpan, probe: Bool, choice: CodecChoice?) throws(WireError) -> Encoded {
        counters.buffers += 1
        counters.bytesIn += input.byteCount
        let result = try choose(input, probe: probe, codec: try codec(for: choice))
        switch result {
        case .raw: counters.bytesOut += input.byteCount
        case .compressed(_, let payload): counters.bytesOut += payload.count
        }
        return result
    }

    /// The codec for a batch: the caller's choice (auto only), else the policy's.
    private func codec(for choice: CodecChoice?) throws(WireError) -> PayloadCodec? {
        guard let choice, policy == .auto else { return defaultCodec }
        switch choice {
        case .raw: return nil
        case .codec(let c): return PayloadCompressor.resolve(c, zstdAccepted: zstdAccepted)
        }
    }

    private func choose(_ input: RawSpan, probe: Bool, codec: PayloadCodec?) throws(WireError) -> Encoded {
        guard !input.isEmpty, policy != .none else { return .raw }
        guard let codec else {
            counters.rawByChoice += 1
            return .raw
        }
        if probe && policy == .auto && PayloadCompressor.spendsTimeOnRandomData(codec) && input.byteCount >= PayloadCompressor.probeMinimum {
            counters.probes += 1
            let sample = PayloadCompressor.sample(input)
            if !pays(try compressor(.deflate(level: 1)).compress(sample[...]).count, sample.count) {
                counters.probeRejections += 1
                return .raw
            }
        }
        counters.fullDeflates += 1
        let started = clock.now
        let compressed = try compressor(codec).compress(input)
        counters.codecTime += clock.now - started
        counters.codecBytesIn += input.byteCount
        counters.codecBytesOut += compressed.count
        guard pays(compressed.count, input.byteCount) else {
            counters.deflateNotWorthIt += 1
            return .raw
        }
        return .compressed(codec.encoding, compressed)
    }

    /// Compression pays when the result is under 95 % of the input.
    private func pays(_ compressed: Int, _ original: Int) -> Bool { compressed * 100 < original * 95 }

    /// `probeSlices` evenly spaced slices of `probeSliceBytes`.
    static func sample(_ input: ArraySlice<UInt8>) -> ArraySlice<UInt8> { sample(input.span.bytes)[...] }

    static func sample(_ input: RawSpan) -> [UInt8] {
        var sample: [UInt8] = []
        sample.reserveCapacity(probeSlices * probeSliceBytes)
        let stride = (input.byteCount - probeSliceBytes) / (probeSlices - 1)
        for k in 0..<probeSlices {
            let start = k * stride
            input.extracting(start..<(start + probeSliceBytes)).withUnsafeBytes { sample += $0 }
        }
        return sample
    }

    /// What a page is, for grouping pages into segments.
    private enum PageClass: Equatable { case zero, random, data, copy }

    /// Pages → segments (zero runs flagged, raw where incompressible, deflate otherwise).
    /// Segments are in PFN order, consecutive, and cover `bytes` exactly.
    ///
    /// `auto` also classifies every non-zero page on sight: 256 bytes sampled
    /// across the page, and ≥ 140 distinct values means random-looking data
    /// (uniform bytes give ~162; on the benchmark corpus this flags every
    /// random page and 17 of 30 262 binary ones). Such pages go raw with no
    /// deflate at all, and the rest are deflated in runs of their own — which
    /// on that corpus is 4 % smaller than deflating 1 MiB chunks whole, since
    /// deflate spends nothing on random pages.
    ///
    /// With a `lane`, data runs of a zstd batch continue that lane's stream (§15):
    /// segments of encoding `zstdLane`, never sent raw instead (their bytes are in the
    /// lane's history already; zstd stores incompressible blocks raw by itself).
    public func encodePages(startPFN: UInt64, pageSize: Int, bytes: [UInt8], choice: CodecChoice? = nil,
                            lane: ZstdLane? = nil) throws(WireError) -> [PageSegment] {
        let pages = bytes.span.bytes
        var segments: [PageSegment] = []
        for run in try runs(pageSize: pageSize, pages: pages, choice: choice) {
            let pfn = startPFN + UInt64(run.pages.lowerBound)
            let count = UInt32(run.pages.count)
            let range = (run.pages.lowerBound * pageSize)..<(run.pages.upperBound * pageSize)
            switch try encode(run.kind, pages.extracting(range), pageCount: run.pages.count, choice: choice, lane: lane) {
            case nil: segments.append(PageSegment(startPFN: pfn, pageCount: count, encoding: .zero, payload: []))
            case .raw: segments.append(PageSegment(startPFN: pfn, pageCount: count, encoding: .raw, payload: Array(bytes[range])))
            case .encoded(let encoding, let laneIndex, let payload):
                segments.append(PageSegment(startPFN: pfn, pageCount: count, encoding: encoding, payload: payload, lane: laneIndex))
            }
        }
        return segments
    }

    /// As `encodePages(startPFN:pageSize:bytes:choice:)` on pages lent straight from
    /// the guest mapping, written into a PAGES frame built in place: a raw page is
    /// copied once, into the frame; a run to compress is copied first and compressed
    /// from the copy.
    ///
    /// Why the copy: the mapping may change while it is read (a device DMA-writes the
    /// running guest). A changed page may go out torn, and its dirty bit has it sent
    /// again. But an LZ codec also matches one page against another as it was at one
    /// instant and writes literals as they are at another, so a page that did *not*
    /// change could decode to bytes it never held, and nothing would send it again
    /// (seen: a migration that succeeded with 16 wrong bytes in an unchanged page).
    /// From a copy, every page decodes to what the copy held.
    public func encodePages(startPFN: UInt64, pageSize: Int, pages: RawSpan, choice: CodecChoice? = nil,
                            into frame: inout PagesFrameBuilder, lane: ZstdLane? = nil) throws(WireError) {
        var none: PageCopies?
        try encodeLentPages(startPFN: startPFN, pageSize: pageSize, pages: pages, choice: choice, into: &frame, lane: lane, copies: &none)
    }

    /// As `encodePages(startPFN:pageSize:pages:choice:into:lane:)` with page copies (§17).
    /// Every non-zero page whose sketch the source sent is fingerprinted as it is in the mapping, and `copies.find`
    /// names pages the destination holds already (`copies.confirm` compares them), which
    /// go as `copy` segments. What `copies.sent` lists must be exactly the bytes sent, so
    /// those fingerprints are taken again where the bytes are fixed: from the copy a
    /// codec reads, or from the frame a raw run was copied into. Raw runs the writer
    /// sends from the mapping (borrowed) are not listed: no one knows which bytes they
    /// will carry.
    public func encodePages(startPFN: UInt64, pageSize: Int, pages: RawSpan, choice: CodecChoice? = nil,
                            into frame: inout PagesFrameBuilder, lane: ZstdLane? = nil, copies: inout PageCopies) throws(WireError) {
        var some: PageCopies? = copies
        try encodeLentPages(startPFN: startPFN, pageSize: pageSize, pages: pages, choice: choice, into: &frame, lane: lane, copies: &some)
        copies = some!
    }

    private func encodeLentPages(startPFN: UInt64, pageSize: Int, pages: RawSpan, choice: CodecChoice?,
                                 into frame: inout PagesFrameBuilder, lane: ZstdLane?, copies: inout PageCopies?) throws(WireError) {
        // A frame of a lane is retained (and replayed) as its bytes (§15.4): its raw pages are
        // copied in; any other frame may leave them in the mapping for the writer.
        let batchCodec = try codec(for: choice)
        let laneBatch = lane != nil && ZstdLane.carries(batchCodec)
        let borrows = frame.borrowsRawPages && !laneBatch
        let (runs, nonZero) = try runs(pageSize: pageSize, pages: pages, choice: choice, copies: copies)
        for run in runs {
            let pfn = startPFN + UInt64(run.pages.lowerBound)
            let count = UInt32(run.pages.count)
            if let source = run.source {
                frame.append(startPFN: pfn, pageCount: count, encoding: .copy, payload: Array(PageSegment.copy(startPFN: pfn, pageCount: count, from: source).payload))
                copies!.copiedPages += run.pages.count
                continue
            }
            let bytes = pages.extracting((run.pages.lowerBound * pageSize)..<(run.pages.upperBound * pageSize))
            let (payload, stablePrints) = try encodeLent(run.kind, bytes, pageCount: run.pages.count, choice: choice, lane: lane,
                                                         fingerprinter: copies?.fingerprinter, pageSize: pageSize)
            var sentPrints: [(print: PageFingerprint, sketch: UInt32)]?
            switch payload {
            case nil: frame.append(startPFN: pfn, pageCount: count, encoding: .zero, payload: [])
            case .raw where borrows && bytes.byteCount >= PagesFrameBuilder.minimumBorrowedBytes:
                frame.appendBorrowedRaw(startPFN: pfn, pageCount: count, byteCount: bytes.byteCount)
            case .raw:
                frame.appendRaw(startPFN: pfn, pageCount: count, pages: bytes)
                if let fingerprinter = copies?.fingerprinter { sentPrints = frame.fingerprintLastPayload(pageSize: pageSize, fingerprinter) }
            case .encoded(let encoding, let laneIndex, let payload):
                frame.append(startPFN: pfn, pageCount: count, encoding: encoding, payload: payload, lane: laneIndex)
                sentPrints = stablePrints
            }
            guard let sentPrints else { continue }
            // A page that was zero in the mapping (bridged into a zstd run) is never a copy's source.
            for (k, p) in run.pages.enumerated() where nonZero[p] {
                copies!.sent.append(SentPage(pfn: startPFN + UInt64(p), fingerprint: sentPrints[k].print, sketch: sentPrints[k].sketch))
            }
        }
    }

    /// What a run of pages became: raw (copied where it goes) or a segment payload.
    private enum SegmentPayload {
        case raw
        case encoded(PageEncoding, lane: UInt8, [UInt8])
    }

    /// As `encode(_:_:pageCount:choice:lane:)` on pages that may change meanwhile: a data
    /// run is compressed from a copy (see `encodePages(startPFN:pageSize:pages:choice:into:lane:)`).
    /// With a `fingerprinter`, also the fingerprints of the copy's pages (nil when no copy was made).
    private func encodeLent(_ kind: PageClass, _ run: RawSpan, pageCount: Int, choice: CodecChoice?, lane: ZstdLane?,
                            fingerprinter: PageFingerprinter?, pageSize: Int) throws(WireError) -> (SegmentPayload?, [(print: PageFingerprint, sketch: UInt32)]?) {
        // Only what a codec will read: a run going raw is copied once, into the frame.
        guard kind == .data, policy != .none, try codec(for: choice) != nil else {
            return (try encode(kind, run, pageCount: pageCount, choice: choice, lane: lane), nil)
        }
        // Moved out and back: the copy's span must not overlap an access to `self`,
        // which `encode` makes (and the buffer's capacity is kept for the next run).
        // Every codec gets the copy, also those that buffer their input themselves
        // (zlib, a lane's streaming zstd): one rule, at the price of a memcpy.
        var copy: [UInt8] = []
        swap(&copy, &stableRun)
        defer { swap(&copy, &stableRun) }
        copy.removeAll(keepingCapacity: true)
        run.withUnsafeBytes { copy.append(contentsOf: $0) }
        let prints = fingerprinter.map { f in
            (0..<pageCount).map { p in f.identify(copy.span.bytes.extracting((p * pageSize)..<((p + 1) * pageSize))) }
        }
        return (try encode(kind, copy.span.bytes, pageCount: pageCount, choice: choice, lane: lane), prints)
    }

    /// One run of pages of one class; nil for a zero run (no payload).
    private func encode(_ kind: PageClass, _ run: RawSpan, pageCount: Int, choice: CodecChoice?,
                        lane: ZstdLane?) throws(WireError) -> SegmentPayload? {
        switch kind {
        case .zero: return nil
        case .copy: preconditionFailure("a copy run has no payload to encode")
        case .random:
            counters.pagesLookingRandom += pageCount
            counters.buffers += 1
            counters.bytesIn += run.byteCount
            counters.bytesOut += run.byteCount
            // In a compressed batch these bytes travel raw beside the codec's output:
            // count them in the codec's ratio (at no time), so levels that see random
            // pages and levels that skip them are compared on the same wire bytes.
            if try codec(for: choice) != nil {
                counters.codecBytesIn += run.byteCount
                counters.codecBytesOut += run.byteCount
            }
            return .raw
        case .data:
            let codec = try codec(for: choice)
            if let lane, ZstdLane.carries(codec), case .zstd(let level)? = codec { return try encodeLane(run, level: level, lane: lane) }
            switch try encode(run, probe: false, choice: choice) {
            case .raw: return .raw
            case .compressed(let encoding, let payload): return .encoded(PageEncoding(encoding), lane: 0, payload)
            }
        }
    }

    /// A data run as the next segment of `lane`, counted as a zstd compression.
    private func encodeLane(_ run: RawSpan, level: Int, lane: ZstdLane) throws(WireError) -> SegmentPayload {
        counters.buffers += 1
        counters.fullDeflates += 1
        let started = clock.now
        let payload = try lane.encoder.compress(run, level: level)
        counters.codecTime += clock.now - started
        counters.bytesIn += run.byteCount
        counters.bytesOut += payload.count
        counters.codecBytesIn += run.byteCount
        counters.codecBytesOut += payload.count
        return .encoded(.zstdLane, lane: lane.index, payload)
    }

    /// The pages cut into runs of one class, each within the segment bounds.
    private func runs(pageSize: Int, pages: RawSpan, choice: CodecChoice?) throws(WireError) -> [(kind: PageClass, pages: Range<Int>)] {
        try runs(pageSize: pageSize, pages: pages, choice: choice, copies: nil).runs.map { ($0.kind, $0.pages) }
    }

    /// A run of one class; `source`: a copy run's first source PFN (its pages' sources follow on).
    private typealias Run = (kind: PageClass, pages: Range<Int>, source: UInt64?)

    /// The runs, and with `copies` each page's fingerprint (nil for a zero page).
    private func runs(pageSize: Int, pages: RawSpan, choice: CodecChoice?,
                      copies: PageCopies?) throws(WireError) -> (runs: [Run], nonZero: [Bool]) {
        guard pageSize > 0, pages.byteCount % pageSize == 0 else { throw WireError.unalignedPages(byteCount: pages.byteCount, pageSize: pageSize) }
        let pageCount = pages.byteCount / pageSize
        let codec = try codec(for: choice)
        let spotsRandom = policy == .auto && PayloadCompressor.spendsTimeOnRandomData(codec)
        var classes: [PageClass] = []
        classes.reserveCapacity(pageCount)
        for p in 0..<pageCount { classes.append(isAllZero(pages.extracting((p * pageSize)..<((p + 1) * pageSize))) ? .zero : .data) }
        var sources: [UInt64?] = []
        if let copies {
            var sketches: [UInt32?] = []
            for p in 0..<pageCount {
                sketches.append(classes[p] == .zero ? nil : copies.fingerprinter.sketch(pages.extracting((p * pageSize)..<((p + 1) * pageSize))))
            }
            let candidates = copies.mayHold(sketches)
            var prints: [PageFingerprint?] = []
            for p in 0..<pageCount {
                prints.append(candidates[p] ? copies.fingerprinter.fingerprint(pages.extracting((p * pageSize)..<((p + 1) * pageSize))) : nil)
            }
            sources = copies.find(prints)
            precondition(sources.count == pageCount, "PageCopies.find answers for every page")
            for p in 0..<pageCount {
                guard let source = sources[p] else { continue }
                if copies.confirm(source, pages.extracting((p * pageSize)..<((p + 1) * pageSize))) { classes[p] = .copy } else { sources[p] = nil }
            }
        }
        if spotsRandom {
            for p in 0..<pageCount where classes[p] == .data && looksRandom(pages.extracting((p * pageSize)..<((p + 1) * pageSize))) { classes[p] = .random }
        }
        return (cut(classes, sources: sources, pageSize: pageSize, codec: codec), classes.map { $0 != .zero })
    }

    /// Classes → runs within the segment bounds; copy runs only over consecutive sources.
    private func cut(_ pageClasses: [PageClass], sources: [UInt64?], pageSize: Int, codec: PayloadCodec?) -> [Run] {
        var classes = pageClasses
        let pageCount = classes.count
        var segmentBytes = PayloadCompressor.maxSegmentBytes
        if case .zstd? = codec {
            PayloadCompressor.bridgeZeroGaps(&classes, upTo: PayloadCompressor.zstdZeroGapPages)
            segmentBytes = PayloadCompressor.maxZstdSegmentBytes
        }
        let maxRun = max(1, segmentBytes / pageSize)
        let maxZeroRun = max(1, PayloadCompressor.maxZeroSegmentBytes / pageSize)
        var runs: [Run] = []
        var first = 0
        while first < pageCount {
            let kind = classes[first]
            let limit = min(pageCount, first + (kind == .zero ? maxZeroRun : maxRun))
            let source = kind == .copy ? sources[first] : nil
            var end = first + 1
            while end < limit && classes[end] == kind && (source == nil || sources[end] == source! + UInt64(end - first)) { end += 1 }
            runs.append((kind, first..<end, source))
            first = end
        }
        return runs
    }

    /// Whether `auto` should spot random-looking pages and send them raw around the
    /// codec: for deflate, which spends as long on them as on data. Not for zstd, which
    /// stores incompressible blocks raw by itself (2.1 GB/s on random pages at level 3),
    /// so they stay in the data runs: on the benchmark corpus data runs average two
    /// pages between random ones, and compressing those short runs alone made level 3's
    /// output 3.4 % larger and level 6's 4 % larger than 1 MiB segments with the random
    /// pages in them, at about the same time (docs/PERFORMANCE.md, issue 14). Nor for a
    /// raw batch, where everything goes raw.
    static func spendsTimeOnRandomData(_ codec: PayloadCodec?) -> Bool {
        switch codec {
        case .deflate?: true
        case .zstd?, nil: false
        }
    }

    /// zstd segments take in zero runs of up to this many pages between two data runs
    /// (they cost a few bytes compressed): each segment's frame starts without context,
    /// and on data cut by short zero runs (the benchmark corpus) cutting at every zero
    /// page made zstd level 3 7 % larger than zstd's own stream of the same pages,
    /// bridging runs of up to 4 pages 1.5 % (docs/PERFORMANCE.md, issue 14).
    public static let zstdZeroGapPages = 4

    /// Zero runs of at most `gap` pages with data on both sides become data.
    private static func bridgeZeroGaps(_ classes: inout [PageClass], upTo gap: Int) {
        var start = 0
        while start < classes.count {
            var end = start + 1
            while end < classes.count && classes[end] == classes[start] { end += 1 }
            if classes[start] == .zero, end - start <= gap, start > 0, end < classes.count,
               classes[start - 1] == .data, classes[end] == .data {
                for k in start..<end { classes[k] = .data }
            }
            start = end
        }
    }

    /// 256 bytes sampled evenly across the page; ≥ 140 distinct values looks random.
    private func looksRandom(_ page: RawSpan) -> Bool {
        let samples = 256
        guard page.byteCount >= samples else { return false }
        let stride = page.byteCount / samples
        var seen: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        page.withUnsafeBytes { raw in
            withUnsafeMutableBytes(of: &seen) { bits in
                var i = 0
                for _ in 0..<samples {
                    let b = raw[i]
                    let word = Int(b >> 6) * 8
                    let old = bits.load(fromByteOffset: word, as: UInt64.self)
                    bits.storeBytes(of: old | (1 << UInt64(b & 63)), toByteOffset: word, as: UInt64.self)
                    i += stride
                }
            }
        }
        let distinct = seen.0.nonzeroBitCount + seen.1.nonzeroBitCount + seen.2.nonzeroBitCount + seen.3.nonzeroBitCount
        return distinct >= 140
    }
}

/// One batch's page copies (§17), for `PayloadCompressor.encodePages(…copies:)`.
public struct PageCopies {
    public let fingerprinter: PageFingerprinter
    /// For each page's sketch (nil: a zero page), whether a page with that sketch may be
    /// held (false: certainly not, so its fingerprint is not taken).
    public let mayHold: ([UInt32?]) -> [Bool]
    /// For each page's fingerprint (nil: not looked up), a PFN the destination holds those
    /// bytes at, or nil: what the caller knows of the destination (the engine's table).
    public let find: ([PageFingerprint?]) -> [UInt64?]
    /// Whether the page a source PFN names still holds these bytes; a copy is made only then.
    public let confirm: (UInt64, RawSpan) -> Bool
    /// Out: the pages the batch sent with their bytes, with their fingerprints.
    public var sent: [SentPage] = []
    /// Out: the pages the batch sent as copies.
    public var copiedPages = 0

    public init(fingerprinter: PageFingerprinter, mayHold: @escaping ([UInt32?]) -> [Bool], find: @escaping ([PageFingerprint?]) -> [UInt64?],
                confirm: @escaping (UInt64, RawSpan) -> Bool) {
        self.fingerprinter = fingerprinter
        self.mayHold = mayHold
        self.find = find
        self.confirm = confirm
    }
}

/// A page sent with its bytes, and what they were.
public struct SentPage: Sendable, Equatable {
    public var pfn: UInt64
    public var fingerprint: PageFingerprint
    /// `PageFingerprinter.sketch` of the same bytes.
    public var sketch: UInt32
    public init(pfn: UInt64, fingerprint: PageFingerprint, sketch: UInt32) { self.pfn = pfn; self.fingerprint = fingerprint; self.sketch = sketch }
}

/// What the caller wants a batch sent as (under `auto`).
public enum CodecChoice: Hashable, Sendable, CustomStringConvertible {
    case raw
    case codec(PayloadCodec)

    public var description: String {
        switch self {
        case .raw: "raw"
        case .codec(let c): c.description
        }
    }
}

extension PageEncoding {
    /// The segment encoding of a payload encoding.
    init(_ encoding: Encoding) {
        switch encoding {
        case .raw: self = .raw
        case .deflate: self = .deflate
        case .zstd: self = .zstd
        case .zstdLanes: self = .zstdLane
        case .xxh3Digest, .pageCopies: preconditionFailure("encoding \(encoding.rawValue) is not a codec")  // no codec has it
        }
    }
}

/// Decodes payloads back, checking declared lengths against limits. One per
/// applier (per stream): it holds that stream's zstd lanes (§15), each decoder made
/// when its lane is first used.
public final class PayloadDecompressor {
    public let limits: WireLimits
    /// The source's lanes (the session's L, §15.2): a lane segment must name one below it.
    public let lanes: Int
    private let inflater: FastInflater
    private let zstd: ZstdDecompressor
    private var laneDecoders: [ZstdLaneDecoder?]

    public init(limits: WireLimits = .default, lanes: Int = 0) throws(WireError) {
        guard (0...Int(StreamOffer.maxLanes)).contains(lanes) else {
            throw WireError.invalidValue(frame: .hello, field: "stream lanes", value: UInt64(clamping: lanes))
        }
        self.limits = limits
        self.lanes = lanes
        inflater = try FastInflater()
        zstd = try ZstdDecompressor()
        laneDecoders = Array(repeating: nil, count: lanes)
    }

    public func decode(_ data: DeviceData) throws(WireError) -> [UInt8] {
        let declared = Int(data.originalLength)
        switch data.encoding {
        case .raw:
            guard data.payload.count == declared else {
                throw WireError.payloadSizeMismatch(frame: .deviceData, field: "raw data", expected: declared, actual: data.payload.count)
            }
            return Array(data.payload)
        case .deflate:
            return try inflater.inflate(data.payload, expectedLength: declared, limit: limits.maxInflated, frame: .deviceData)
        case .zstd:
            return try zstd.decompress(data.payload, expectedLength: declared, limit: limits.maxInflated, frame: .deviceData)
        case .zstdLanes, .xxh3Digest, .pageCopies:
            throw DeviceData.refused(data.encoding)
        }
    }

    /// The bytes of one segment (zero pages as zeroes), exactly pageCount*pageSize.
    public func decode(_ segment: PageSegment, pageSize: Int) throws(WireError) -> [UInt8] {
        let size = try decodedSize(segment, pageSize: pageSize)
        return try decodedArray(count: size) { (span: inout MutableSpan<UInt8>) throws(WireError) in try decodeChecked(segment, into: &span) }
    }

    /// The segment decoded straight into `pages` (guest memory the caller lends),
    /// which must be exactly pageCount*pageSize bytes; one copy for raw, none between
    /// the codec and the pages otherwise. On an error the pages may hold part of
    /// the segment: the session that carried it fails.
    public func decode(_ segment: PageSegment, pageSize: Int, into pages: inout MutableSpan<UInt8>) throws(WireError) {
        let size = try decodedSize(segment, pageSize: pageSize)
        guard pages.count == size else {
            throw WireError.payloadSizeMismatch(frame: .pages, field: "decoded segment room", expected: size, actual: pages.count)
        }
        try decodeChecked(segment, into: &pages)
    }

    /// pageCount*pageSize, checked against the limits before anything is written.
    private func decodedSize(_ segment: PageSegment, pageSize: Int) throws(WireError) -> Int {
        guard pageSize > 0, isValidPageSize(UInt64(pageSize)) else { throw WireError.invalidPageSize(frame: .pages, pageSize: UInt64(max(0, pageSize))) }
        let (size, overflow) = Int(segment.pageCount).multipliedReportingOverflow(by: pageSize)
        guard !overflow, size <= limits.maxInflated else {
            throw WireError.inflatedTooLarge(frame: .pages, declared: overflow ? Int.max : size, limit: limits.maxInflated)
        }
        return size
    }

    /// `pages.count` is the segment's checked decoded size.
    private func decodeChecked(_ segment: PageSegment, into pages: inout MutableSpan<UInt8>) throws(WireError) {
        let size = pages.count
        switch segment.encoding {
        case .zero:
            guard segment.payload.isEmpty else {
                throw WireError.payloadSizeMismatch(frame: .pages, field: "zero segment payload", expected: 0, actual: segment.payload.count)
            }
            pages.withUnsafeMutableBufferPointer { $0.initialize(repeating: 0) }
        case .raw:
            guard segment.payload.count == size else {
                throw WireError.payloadSizeMismatch(frame: .pages, field: "raw segment payload", expected: size, actual: segment.payload.count)
            }
            segment.payload.withUnsafeBufferPointer { src in pages.withUnsafeMutableBufferPointer { _ = $0.update(fromContentsOf: src) } }
        case .deflate:
            try inflater.inflate(segment.payload, into: &pages, frame: .pages)
        case .zstd:
            try zstd.decompress(segment.payload, into: &pages, frame: .pages)
        case .zstdLane:
            try laneDecoder(segment.lane).decode(segment.payload, into: &pages, frame: .pages)
        case .copy:
            // Its bytes are the destination's own pages: the applier copies them (§17).
            throw WireError.invalidValue(frame: .pages, field: "segment encoding (a copy is applied from guest memory, not decoded)",
                                         value: UInt64(PageEncoding.copy.rawValue))
        }
    }

    private func laneDecoder(_ lane: UInt8) throws(WireError) -> ZstdLaneDecoder {
        let index = Int(lane)
        guard index < lanes else { throw WireError.laneOutOfRange(frame: .pages, lane: lane, lanes: lanes) }
        if let decoder = laneDecoders[index] { return decoder }
        let decoder = try ZstdLaneDecoder()
        laneDecoders[index] = decoder
        return decoder
    }
}

/// Per-thread: owns C state that one thread at a time may use; never shared.
@available(*, unavailable)
extension PayloadCompressor: Sendable {}

/// Per-thread: owns C state that one thread at a time may use; never shared.
@available(*, unavailable)
extension PayloadDecompressor: Sendable {}
