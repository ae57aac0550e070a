internal import CZstd

// zstd lanes (docs/PROTOCOL.md §15, version 4): a lane is one zstd stream per
// (stream, lane index), RFC 8878 frames one after another. Each PAGES segment of a
// lane carries the next bytes of that stream, ended with ZSTD_e_flush, so it decodes
// to exactly its pages with the history of every earlier segment of the lane: on the
// benchmark corpus 4 % fewer bytes than independent 1 MiB frames at level 3.

/// One lane's zstd stream on the source (one per worker per stream; never shared).
public final class ZstdLaneEncoder {
    private let context: OpaquePointer
    /// The level of the open frame; nil before the first segment.
    private var frameLevel: Int?

    public init() throws(WireError) {
        guard let c = ZSTD_createCCtx() else {
            throw WireError.compressionFailed(library: "zstd", operation: "ZSTD_createCCtx", detail: "out of memory")
        }
        context = c
        do throws(WireError) {
            // The content size is unknown while streaming: leave it out rather than have zstd guess.
            try set(ZSTD_c_windowLog, Int32(ZstdLane.maxWindowLog))
            try set(ZSTD_c_contentSizeFlag, 0)
        } catch {
            ZSTD_freeCCtx(c)
            throw error
        }
    }

    deinit { ZSTD_freeCCtx(context) }

    /// The next segment of this lane: `input` compressed at `level` (zstdLevels, not 0), ended with ZSTD_e_flush.
    /// A level different from the last one first ends the current frame (ZSTD_e_end with no input, its bytes at the
    /// start of this payload) and starts a new frame at `level`. windowLog 24; long-distance matching at level >= 3.
    public func compress(_ input: RawSpan, level: Int) throws(WireError) -> [UInt8] {
        guard zstdLevels.contains(level), level != 0 else { throw WireError.invalidZstdLevel(level) }
        var output = [UInt8](repeating: 0, count: ZSTD_compressBound(input.byteCount) + 64)
        var written = 0
        if frameLevel != level {
            if frameLevel != nil { try drive(nil, ZSTD_e_end, into: &output, at: &written) }
            try startFrame(level: level)
        }
        var thrown: WireError?
        input.withUnsafeBytes { bytes in
            do throws(WireError) { try drive(bytes, ZSTD_e_flush, into: &output, at: &written) } catch { thrown = error }
        }
        if let thrown { throw thrown }
        output.removeLast(output.count - written)
        return output
    }

    /// Parameters apply to the next frame; the context holds no open frame here.
    private func startFrame(level: Int) throws(WireError) {
        frameLevel = nil
        let code = ZSTD_CCtx_reset(context, ZSTD_reset_session_only)
        guard ZSTD_isError(code) == 0 else { throw Self.failure("ZSTD_CCtx_reset", code) }
        try set(ZSTD_c_compressionLevel, Int32(level))
        try set(ZSTD_c_enableLongDistanceMatching, level >= ZstdLane.minimumLevel ? CZSTD_PS_ENABLE : CZSTD_PS_DISABLE)
        frameLevel = level
    }

    /// Feeds `input` (nil: none) with `directive` until zstd has consumed it and flushed
    /// everything, growing `output` should the bound not hold.
    private func drive(_ input: UnsafeRawBufferPointer?, _ directive: ZSTD_EndDirective,
                       into output: inout [UInt8], at written: inout Int) throws(WireError) {
        var source = ZSTD_inBuffer(src: input?.baseAddress, size: input?.count ?? 0, pos: 0)
        while true {
            if written == output.count { output.append(contentsOf: repeatElement(0, count: max(output.count, 4096))) }
            let capacity = output.count
            let (remaining, produced) = output.withUnsafeMutableBytes { out in
                var sink = ZSTD_outBuffer(dst: out.baseAddress, size: capacity, pos: written)
                let code = ZSTD_compressStream2(context, &sink, &source, directive)
                return (code, sink.pos)
            }
            guard ZSTD_isError(remaining) == 0 else {
                frameLevel = nil  // the frame is broken: never continue it
                throw Self.failure("ZSTD_compressStream2", remaining)
            }
            written = produced
            if remaining == 0 && source.pos == source.size { return }
        }
    }

    private func set(_ parameter: ZSTD_cParameter, _ value: Int32) throws(WireError) {
        let code = ZSTD_CCtx_setParameter(context, parameter, value)
        guard ZSTD_isError(code) == 0 else { throw Self.failure("ZSTD_CCtx_setParameter", code) }
    }

    private static func failure(_ operation: String, _ code: Int) -> WireError {
        .compressionFailed(library: "zstd", operation: operation, detail: String(cString: ZSTD_getErrorName(code)))
    }
}

/// One lane's decoder on the destination (one per lane per stream). Each payload must
/// decode to exactly the room given, no input left and no output pending; at every
/// frame start the frame must be a zstd frame (not skippable) with no dictionary, and
/// its window at most 2^24 bytes. After an error it refuses everything: the lane's
/// history is lost, and the session fails anyway.
final class ZstdLaneDecoder {
    private let context: OpaquePointer
    /// Initially, and whenever zstd finished a frame: the next input byte starts one.
    private var atFrameStart = true
    private var failure: WireError?

    init() throws(WireError) {
        guard let d = ZSTD_createDCtx() else {
            throw WireError.compressionFailed(library: "zstd", operation: "ZSTD_createDCtx", detail: "out of memory")
        }
        context = d
        let code = ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, Int32(ZstdLane.maxWindowLog))
        guard ZSTD_isError(code) == 0 else {
            ZSTD_freeDCtx(d)
            throw WireError.compressionFailed(library: "zstd", operation: "ZSTD_DCtx_setParameter", detail: String(cString: ZSTD_getErrorName(code)))
        }
    }

    deinit { ZSTD_freeDCtx(context) }

    func decode(_ payload: ArraySlice<UInt8>, into output: inout MutableSpan<UInt8>, frame: FrameType?) throws(WireError) {
        if let failure { throw failure }
        do throws(WireError) {
            try decodeChecked(payload, into: &output, frame: frame)
        } catch {
            failure = error
            throw error
        }
    }

    private func decodeChecked(_ payload: ArraySlice<UInt8>, into output: inout MutableSpan<UInt8>, frame: FrameType?) throws(WireError) {
        let declared = output.count
        var thrown: WireError?
        let (consumed, produced) = payload.withUnsafeBytes { input in
            output.withUnsafeMutableBufferPointer { out in
                var source = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
                var sink = ZSTD_outBuffer(dst: out.baseAddress, size: out.count, pos: 0)
                do throws(WireError) { try run(&source, &sink, input: input, frame: frame) } catch { thrown = error }
                return (source.pos, sink.pos)
            }
        }
        if let thrown { throw thrown }
        guard produced == declared else {
            throw .zstdLaneLengthMismatch(frame: frame, declared: declared, detail: "its input ends after \(produced) bytes of output")
        }
        guard consumed == payload.count else {
            throw .zstdLaneLengthMismatch(frame: frame, declared: declared, detail: "\(payload.count - consumed) byte(s) of input left over")
        }
        try probeForPendingOutput(frame: frame, declared: declared)
    }

    /// Calls zstd until it makes no more progress or has filled the output with all the input.
    private func run(_ source: inout ZSTD_inBuffer, _ sink: inout ZSTD_outBuffer, input: UnsafeRawBufferPointer,
                     frame: FrameType?) throws(WireError) {
        while !(source.pos == source.size && sink.pos == sink.size) {
            if atFrameStart && source.pos < source.size {
                try Self.checkFrameStart(UnsafeRawBufferPointer(rebasing: input[source.pos...]), frame: frame)
            }
            let before = (source.pos, sink.pos)
            let code = ZSTD_decompressStream(context, &sink, &source)
            guard ZSTD_isError(code) == 0 else { throw Self.error(code, frame: frame) }
            if code == 0 { atFrameStart = true } else if source.pos > before.0 { atFrameStart = false }
            if (source.pos, sink.pos) == before { return }
        }
    }

    /// Output zstd still holds after the room is full is more than the segment declares.
    private func probeForPendingOutput(frame: FrameType?, declared: Int) throws(WireError) {
        var scratch: UInt8 = 0
        let pending = withUnsafeMutableBytes(of: &scratch) { byte in
            var source = ZSTD_inBuffer(src: nil, size: 0, pos: 0)
            var sink = ZSTD_outBuffer(dst: byte.baseAddress, size: 1, pos: 0)
            let code = ZSTD_decompressStream(context, &sink, &source)
            return ZSTD_isError(code) != 0 || sink.pos > 0
        }
        guard !pending else { throw .zstdLaneLengthMismatch(frame: frame, declared: declared, detail: "more output is pending") }
    }

    /// A frame's start: the zstd magic (skippable frames are not allowed), a whole
    /// header within this payload, no dictionary.
    private static func checkFrameStart(_ bytes: UnsafeRawBufferPointer, frame: FrameType?) throws(WireError) {
        guard bytes.count >= 4, bytes.prefix(4).elementsEqual(ZstdDecompressor.magic) else {
            throw .corruptZstdFrame(frame: frame, detail: "a lane frame does not start with the zstd frame magic (skippable frames are not allowed)")
        }
        guard ZSTD_getFrameContentSize(bytes.baseAddress, bytes.count) != CZSTD_CONTENTSIZE_ERROR else {
            throw .corruptZstdFrame(frame: frame, detail: "invalid lane frame header, or one cut by the end of the segment")
        }
        let dictionary = ZSTD_getDictID_fromFrame(bytes.baseAddress, bytes.count)
        guard dictionary == 0 else { throw .corruptZstdFrame(frame: frame, detail: "lane frame needs dictionary \(dictionary) (none are used)") }
    }

    private static func error(_ code: Int, frame: FrameType?) -> WireError {
        if ZSTD_getErrorCode(code) == ZSTD_error_frameParameter_windowTooLarge {
            return .corruptZstdFrame(frame: frame, detail: "lane frame window above 2^\(ZstdLane.maxWindowLog) bytes")
        }
        return .corruptZstdFrame(frame: frame, detail: String(cString: ZSTD_getErrorName(code)))
    }
}

/// A lane as a worker holds it: its index in the segment header and its encoder.
public struct ZstdLane {
    public let index: UInt8
    public let encoder: ZstdLaneEncoder
    public init(index: UInt8, encoder: ZstdLaneEncoder) { self.index = index; self.encoder = encoder }
    /// The largest window a lane frame may need (2^24 bytes): what a destination holds per lane.
    public static let maxWindowLog = 24
    /// The lowest level that goes on a lane: below it a lane saves 0.2–0.4 % of the bytes
    /// (measured on the benchmark guest, most of the gain is long-distance matching,
    /// which runs from level 3) and costs a 16 MiB window's streaming, so `auto`'s fast
    /// levels on a fast link compress segments alone, as before version 4.
    public static let minimumLevel = 3

    /// Whether a batch compressed with `codec` goes on a lane.
    static func carries(_ codec: PayloadCodec?) -> Bool {
        if case .zstd(let level)? = codec { level >= minimumLevel } else { false }
    }
}

/// Per-thread: owns C state that one thread at a time may use; never shared.
@available(*, unavailable)
extension ZstdLaneEncoder: Sendable {}

/// Per-thread: owns C state that one thread at a time may use; never shared.
@available(*, unavailable)
extension ZstdLaneDecoder: Sendable {}
