internal import CZstd

// zstd (RFC 8878) as this protocol uses it (docs/PROTOCOL.md §9): each payload is
// one whole frame from a one-shot call (ZSTD_compress2 / ZSTD_decompressDCtx), with its content size in the frame header,
// no dictionary. One compression or decompression context per worker thread,
// reused for every payload (allocating one costs more than compressing a page).

/// The compression levels `zstd:N` takes: zstd's fast (negative) levels down to -50,
/// and up to 19; 20–22 ("ultra") need hundreds of MiB per worker for no gain on
/// payloads of at most 16 MiB.
public let zstdLevels = -50...19

/// One-shot zstd compressor; one per worker thread.
public final class ZstdCompressor {
    private let context: OpaquePointer
    public let level: Int

    public convenience init(level: Int) throws(WireError) { try self.init(level: level, contentSize: true) }

    /// `contentSize: false` leaves the size out of the header: only tests make such
    /// frames, to see a decoder refuse them.
    init(level: Int, contentSize: Bool) throws(WireError) {
        guard zstdLevels.contains(level), level != 0 else { throw WireError.invalidZstdLevel(level) }
        guard let c = ZSTD_createCCtx() else {
            throw WireError.compressionFailed(library: "zstd", operation: "ZSTD_createCCtx", detail: "out of memory")
        }
        context = c
        self.level = level
        for (parameter, value) in [(ZSTD_c_compressionLevel, Int32(level)), (ZSTD_c_contentSizeFlag, contentSize ? 1 : 0)] {
            let code = ZSTD_CCtx_setParameter(c, parameter, value)
            guard ZSTD_isError(code) == 0 else {
                ZSTD_freeCCtx(c)
                throw WireError.compressionFailed(library: "zstd", operation: "ZSTD_CCtx_setParameter", detail: String(cString: ZSTD_getErrorName(code)))
            }
        }
    }

    deinit { ZSTD_freeCCtx(context) }

    /// One zstd frame of `input` whose header declares its content size
    /// (ZSTD_compress2 writes it: the size is known before the call).
    public func compress(_ input: ArraySlice<UInt8>) throws(WireError) -> [UInt8] { try compress(input.span.bytes) }

    public func compress(_ input: RawSpan) throws(WireError) -> [UInt8] {
        let c = context
        let capacity = ZSTD_compressBound(input.byteCount)
        var code = 0
        let output = input.withUnsafeBytes { inBuf in
            [UInt8](unsafeUninitializedCapacity: max(capacity, 1)) { out, count in
                code = ZSTD_compress2(c, out.baseAddress, capacity, inBuf.baseAddress, inBuf.count)
                count = ZSTD_isError(code) != 0 ? 0 : code
            }
        }
        guard ZSTD_isError(code) == 0 else {
            throw .compressionFailed(library: "zstd", operation: "ZSTD_compress2", detail: String(cString: ZSTD_getErrorName(code)))
        }
        return output
    }
}

/// zstd decompressor with this protocol's rules: one frame, no dictionary, a content
/// size in its header equal to the declared length (checked before any output is
/// allocated, so a bomb cannot make it allocate more), no byte after the frame.
final class ZstdDecompressor {
    private let context: OpaquePointer
    /// The zstd frame magic 0xFD2FB528, little-endian (skippable frames are refused).
    static let magic: [UInt8] = [0x28, 0xB5, 0x2F, 0xFD]

    init() throws(WireError) {
        guard let d = ZSTD_createDCtx() else {
            throw WireError.compressionFailed(library: "zstd", operation: "ZSTD_createDCtx", detail: "out of memory")
        }
        context = d
    }

    deinit { ZSTD_freeDCtx(context) }

    func decompress(_ input: [UInt8], expectedLength: Int, limit: Int, frame: FrameType?) throws(WireError) -> [UInt8] {
        try decompress(input[...], expectedLength: expectedLength, limit: limit, frame: frame)
    }

    func decompress(_ input: ArraySlice<UInt8>, expectedLength: Int, limit: Int, frame: FrameType?) throws(WireError) -> [UInt8] {
        guard expectedLength >= 0, expectedLength <= limit else {
            throw .inflatedTooLarge(frame: frame, declared: expectedLength, limit: limit)
        }
        try Self.checkFrame(input, expectedLength: expectedLength, frame: frame)
        return try decodedArray(count: expectedLength) { (span: inout MutableSpan<UInt8>) throws(WireError) in
            try decompressChecked(input, into: &span, frame: frame)
        }
    }

    /// Decompresses `input` into all of `output`, whose size is the declared length
    /// (the caller checked it against its limit); the header rules come first.
    func decompress(_ input: ArraySlice<UInt8>, into output: inout MutableSpan<UInt8>, frame: FrameType?) throws(WireError) {
        try Self.checkFrame(input, expectedLength: output.count, frame: frame)
        try decompressChecked(input, into: &output, frame: frame)
    }

    private func decompressChecked(_ input: ArraySlice<UInt8>, into output: inout MutableSpan<UInt8>, frame: FrameType?) throws(WireError) {
        let d = context
        let expectedLength = output.count
        let code = input.withUnsafeBytes { inBuf in
            output.withUnsafeMutableBufferPointer { out in
                ZSTD_decompressDCtx(d, out.baseAddress, expectedLength, inBuf.baseAddress, inBuf.count)
            }
        }
        guard ZSTD_isError(code) == 0 else {
            throw .corruptZstdFrame(frame: frame, detail: String(cString: ZSTD_getErrorName(code)))
        }
        // zstd checks the output against the header's content size; this cannot fail
        // unless it did not, and then the payload must still not be applied.
        guard code == expectedLength else { throw .inflatedLengthMismatch(frame: frame, declared: expectedLength, actual: code) }
    }

    /// The largest window a frame may declare (§9): libzstd's default limit for a
    /// streaming decoder, which an independent receiver may keep. One-shot decoding
    /// into the declared length needs no window at all, so this is the spec's rule,
    /// not our memory's.
    static let maxWindowLog = 27
    private static var maxWindowSize: UInt64 { 1 << UInt64(maxWindowLog) }

    /// The window a frame header declares (RFC 8878 §3.1.1.1.2), nil for a
    /// single-segment frame, whose window is its content size (checked already).
    static func windowSize(_ header: ArraySlice<UInt8>) -> UInt64? {
        let at = header.startIndex + 4
        guard header.count >= 6, header[at] & 0x20 == 0 else { return nil }
        let descriptor = header[at + 1]
        let base = UInt64(1) << (10 + UInt64(descriptor >> 3))
        return base + (base / 8) * UInt64(descriptor & 7)
    }

    /// The header rules, before anything is allocated for the output.
    private static func checkFrame(_ input: ArraySlice<UInt8>, expectedLength: Int, frame: FrameType?) throws(WireError) {
        guard input.count >= 4, input.prefix(4).elementsEqual(magic) else {
            throw .corruptZstdFrame(frame: frame, detail: "no zstd frame magic (skippable frames are not allowed)")
        }
        let (contentSize, frameSize, dictionary) = input.withUnsafeBytes { b in
            (ZSTD_getFrameContentSize(b.baseAddress, b.count), ZSTD_findFrameCompressedSize(b.baseAddress, b.count),
             ZSTD_getDictID_fromFrame(b.baseAddress, b.count))
        }
        guard contentSize != CZSTD_CONTENTSIZE_ERROR, ZSTD_isError(frameSize) == 0 else {
            throw .corruptZstdFrame(frame: frame, detail: "invalid or truncated frame")
        }
        guard contentSize != CZSTD_CONTENTSIZE_UNKNOWN else { throw .zstdContentSize(frame: frame, declared: expectedLength, inFrame: nil) }
        guard contentSize == UInt64(expectedLength) else {
            throw .zstdContentSize(frame: frame, declared: expectedLength, inFrame: contentSize)
        }
        guard dictionary == 0 else { throw .corruptZstdFrame(frame: frame, detail: "frame needs dictionary \(dictionary) (none are used)") }
        if let window = windowSize(input), window > maxWindowSize {
            throw .corruptZstdFrame(frame: frame, detail: "window of \(window) bytes above 2^\(maxWindowLog) (PROTOCOL.md §9)")
        }
        guard frameSize == input.count else {
            throw .corruptZstdFrame(frame: frame, detail: "\(input.count - frameSize) byte(s) after the end of the frame")
        }
    }
}

/// Per-thread: owns C state that one thread at a time may use; never shared.
@available(*, unavailable)
extension ZstdCompressor: Sendable {}

/// Per-thread: owns C state that one thread at a time may use; never shared.
@available(*, unavailable)
extension ZstdDecompressor: Sendable {}
