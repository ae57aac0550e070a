internal import CLibdeflate

// libdeflate writes and reads the same raw DEFLATE format as zlib (a peer
// that only has zlib inflates it unchanged), whole buffer at a time, which is
// exactly how this protocol uses compression, and about twice as fast as zlib
// both ways at the same ratio (figures in docs/PERFORMANCE.md).

/// One whole-buffer compressor: zlib's `Deflater`, `FastDeflater` or `ZstdCompressor`.
protocol BufferCompressor: AnyObject {
    func compress(_ input: ArraySlice<UInt8>) throws(WireError) -> [UInt8]
    /// As above on bytes lent without a copy (guest pages in their mapping).
    func compress(_ input: RawSpan) throws(WireError) -> [UInt8]
}

extension Deflater: BufferCompressor {}
extension ZstdCompressor: BufferCompressor {}

/// One raw-DEFLATE decompressor with this protocol's rules: zlib's `Inflater`
/// (the reference every peer has) or `FastInflater` (what the engine uses).
protocol RawDeflateInflater: AnyObject {
    func inflate(_ input: [UInt8], expectedLength: Int, limit: Int, frame: FrameType?) throws(WireError) -> [UInt8]
}

extension Inflater: RawDeflateInflater {}

/// libdeflate compressor; one per worker thread.
public final class FastDeflater: BufferCompressor {
    private let compressor: OpaquePointer
    public let level: Int

    public init(level: Int) throws(WireError) {
        guard (1...12).contains(level) else { throw WireError.invalidCompressionLevel(level) }
        guard let c = libdeflate_alloc_compressor(Int32(level)) else {
            throw WireError.compressionFailed(library: "libdeflate", operation: "libdeflate_alloc_compressor", detail: "out of memory")
        }
        compressor = c
        self.level = level
    }

    deinit { libdeflate_free_compressor(compressor) }

    public func compress(_ input: ArraySlice<UInt8>) throws(WireError) -> [UInt8] {
        try compress(input, outputCapacity: libdeflate_deflate_compress_bound(compressor, input.count))
    }

    /// The input must not change while it is compressed: libdeflate reads it twice
    /// (symbol counts, then the literals it writes), so a byte changed in between
    /// could leave a literal without a Huffman code. Pages lent from a running guest
    /// are copied before they get here (`PayloadCompressor.encodePages`).
    public func compress(_ input: RawSpan) throws(WireError) -> [UInt8] {
        try compress(input, outputCapacity: libdeflate_deflate_compress_bound(compressor, input.byteCount))
    }

    func compress(_ input: ArraySlice<UInt8>, outputCapacity: Int) throws(WireError) -> [UInt8] {
        try compress(input.span.bytes, outputCapacity: outputCapacity)
    }

    /// libdeflate returns 0 when the stream does not fit `outputCapacity` (its only
    /// failure): that must never go out as an empty deflate payload. Tests pass a
    /// small capacity to reach it; `compress` passes the bound, where 0 means a bug.
    func compress(_ input: RawSpan, outputCapacity: Int) throws(WireError) -> [UInt8] {
        let c = compressor
        let output = input.withUnsafeBytes { inBuf in
            [UInt8](unsafeUninitializedCapacity: max(outputCapacity, 1)) { out, count in
                count = libdeflate_deflate_compress(c, inBuf.baseAddress, inBuf.count, out.baseAddress, outputCapacity)
            }
        }
        guard !output.isEmpty else {
            throw .compressionFailed(library: "libdeflate", operation: "libdeflate_deflate_compress",
                                     detail: "no output for \(input.byteCount) input byte(s) into \(outputCapacity) byte(s) of room")
        }
        return output
    }
}

/// libdeflate decompressor with this protocol's rules: the output is exactly
/// the declared length (the buffer is that size, so a bomb cannot make it
/// allocate more) and no byte may follow the end of the stream.
final class FastInflater: RawDeflateInflater {
    private let decompressor: OpaquePointer

    init() throws(WireError) {
        guard let d = libdeflate_alloc_decompressor() else {
            throw WireError.compressionFailed(library: "libdeflate", operation: "libdeflate_alloc_decompressor", detail: "out of memory")
        }
        decompressor = d
    }

    deinit { libdeflate_free_decompressor(decompressor) }

    func inflate(_ input: [UInt8], expectedLength: Int, limit: Int, frame: FrameType?) throws(WireError) -> [UInt8] {
        try inflate(input[...], expectedLength: expectedLength, limit: limit, frame: frame)
    }

    func inflate(_ input: ArraySlice<UInt8>, expectedLength: Int, limit: Int, frame: FrameType?) throws(WireError) -> [UInt8] {
        // The same ceiling as zlib's inflater: whatever the caller's limit, 4 GiB.
        let ceiling = min(limit, Int(UInt32.max) - 1)
        guard expectedLength >= 0, expectedLength <= ceiling else {
            throw .inflatedTooLarge(frame: frame, declared: expectedLength, limit: ceiling)
        }
        return try decodedArray(count: expectedLength) { (span: inout MutableSpan<UInt8>) throws(WireError) in
            try inflate(input, into: &span, frame: frame)
        }
    }

    /// Inflates `input` into all of `output`: its size is the declared length, so a
    /// bomb cannot write past it. The caller checked that size against its limit.
    func inflate(_ input: ArraySlice<UInt8>, into output: inout MutableSpan<UInt8>, frame: FrameType?) throws(WireError) {
        let d = decompressor
        let expectedLength = output.count
        var consumed = 0
        var produced = 0
        let result = input.withUnsafeBytes { inBuf in
            output.withUnsafeMutableBufferPointer { out in
                libdeflate_deflate_decompress_ex(d, inBuf.baseAddress, inBuf.count, out.baseAddress, expectedLength, &consumed, &produced)
            }
        }
        switch result {
        case LIBDEFLATE_SUCCESS:
            if consumed != input.count {
                throw .corruptDeflateStream(frame: frame, detail: "\(input.count - consumed) byte(s) after the end of the stream")
            }
            if produced != expectedLength {
                throw .inflatedLengthMismatch(frame: frame, declared: expectedLength, actual: produced)
            }
        case LIBDEFLATE_INSUFFICIENT_SPACE:
            throw .inflatedExceedsDeclared(frame: frame, declared: expectedLength)
        default:
            throw .corruptDeflateStream(frame: frame, detail: "invalid or truncated deflate data")
        }
    }
}

/// Per-thread: owns C state that one thread at a time may use; never shared.
@available(*, unavailable)
extension FastDeflater: Sendable {}

/// Per-thread: owns C state that one thread at a time may use; never shared.
@available(*, unavailable)
extension FastInflater: Sendable {}
