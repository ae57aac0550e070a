internal import CZlib

// zlib raw deflate (windowBits -15: no zlib header or checksum; TLS already
// protects integrity and DEVICE_END carries a SHA-256 of each device stream).
// Each class owns one heap-allocated z_stream: zlib keeps a back-pointer to it,
// so it must never move (a Swift struct property could).

/// Reusable raw-deflate compressor; one per worker thread.
public final class Deflater {
    private let stream: UnsafeMutablePointer<z_stream>
    public let level: Int

    public init(level: Int) throws(WireError) {
        guard (0...9).contains(level) else { throw WireError.invalidCompressionLevel(level) }
        self.level = level
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        let rc = czlib_deflateInit2(stream, Int32(level), -15, 8, Z_DEFAULT_STRATEGY)
        guard rc == Z_OK else {
            stream.deinitialize(count: 1)
            stream.deallocate()
            throw WireError.zlibFailure(operation: "deflateInit2", code: rc)
        }
    }

    deinit {
        _ = deflateEnd(stream)  // only reports an unfinished stream, which is freed all the same
        stream.deinitialize(count: 1)
        stream.deallocate()
    }

    public func compress(_ input: [UInt8]) throws(WireError) -> [UInt8] { try compress(input[...]) }

    /// One complete raw-deflate stream of `input`, in a single deflate call
    /// (the output buffer is deflateBound-sized, so Z_FINISH always completes).
    public func compress(_ input: ArraySlice<UInt8>) throws(WireError) -> [UInt8] { try compress(input.span.bytes) }

    /// As above on bytes lent without a copy (guest pages in their mapping).
    public func compress(_ input: RawSpan) throws(WireError) -> [UInt8] {
        // zlib counts input in a 32-bit uInt: one call cannot take 4 GiB.
        guard input.byteCount < Int(UInt32.max) else {
            throw .sizeNotRepresentable(what: "deflate input", bytes: UInt64(input.byteCount), limit: UInt64(UInt32.max) - 1)
        }
        let reset = deflateReset(stream)
        guard reset == Z_OK else { throw .zlibFailure(operation: "deflateReset", code: reset) }
        let bound = Int(deflateBound(stream, uLong(input.byteCount)))
        let stream = self.stream
        var rc: Int32 = Z_OK
        let output = input.withUnsafeBytes { raw in
            let inBuf = raw.assumingMemoryBound(to: UInt8.self)
            return [UInt8](unsafeUninitializedCapacity: bound + 1) { out, count in
                stream.pointee.next_in = UnsafeMutablePointer(mutating: inBuf.baseAddress)
                stream.pointee.avail_in = uInt(inBuf.count)
                stream.pointee.next_out = out.baseAddress
                stream.pointee.avail_out = uInt(out.count)
                rc = deflate(stream, Z_FINISH)
                count = out.count - Int(stream.pointee.avail_out)
                stream.pointee.next_in = nil  // no dangling pointer into the caller's array
                stream.pointee.next_out = nil
            }
        }
        guard rc == Z_STREAM_END else { throw .zlibFailure(operation: "deflate", code: rc) }
        return output
    }
}

/// Reusable raw-deflate decompressor; the output must be exactly `expectedLength` bytes and never exceed `limit`.
public final class Inflater {
    private let stream: UnsafeMutablePointer<z_stream>

    public init() throws(WireError) {
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        let rc = czlib_inflateInit2(stream, -15)
        guard rc == Z_OK else {
            stream.deinitialize(count: 1)
            stream.deallocate()
            throw WireError.zlibFailure(operation: "inflateInit2", code: rc)
        }
    }

    deinit {
        _ = inflateEnd(stream)  // cannot fail on a stream inflateInit2 accepted
        stream.deinitialize(count: 1)
        stream.deallocate()
    }

    public func inflate(_ input: [UInt8], expectedLength: Int, limit: Int) throws(WireError) -> [UInt8] {
        try inflate(input, expectedLength: expectedLength, limit: limit, frame: nil)
    }

    /// The output buffer is exactly `expectedLength` bytes, so a decompression bomb
    /// can never make this allocate more: once it is full, one more byte of output
    /// (into a 1-byte scratch) proves the stream is longer than declared.
    func inflate(_ input: [UInt8], expectedLength: Int, limit: Int, frame: FrameType?) throws(WireError) -> [UInt8] {
        // zlib counts in 32 bits: whatever the caller's limit, 4 GiB is the ceiling.
        let ceiling = min(limit, Int(UInt32.max) - 1)
        guard expectedLength >= 0, expectedLength <= ceiling else {
            throw .inflatedTooLarge(frame: frame, declared: expectedLength, limit: ceiling)
        }
        guard input.count < Int(UInt32.max) else {
            throw .corruptDeflateStream(frame: frame, detail: "\(input.count)-byte input is larger than any valid payload")
        }
        let reset = inflateReset(stream)
        guard reset == Z_OK else { throw .zlibFailure(operation: "inflateReset", code: reset) }
        let stream = self.stream
        var outcome: WireError?
        let output = input.withUnsafeBufferPointer { inBuf in
            [UInt8](unsafeUninitializedCapacity: max(expectedLength, 1)) { out, count in
                defer {
                    stream.pointee.next_in = nil
                    stream.pointee.next_out = nil
                }
                stream.pointee.next_in = UnsafeMutablePointer(mutating: inBuf.baseAddress)
                stream.pointee.avail_in = uInt(inBuf.count)
                stream.pointee.next_out = out.baseAddress
                stream.pointee.avail_out = uInt(expectedLength)
                var rc = CZlib.inflate(stream, Z_FINISH)
                count = expectedLength - Int(stream.pointee.avail_out)
                if rc != Z_STREAM_END && rc != Z_DATA_ERROR && stream.pointee.avail_out == 0 {
                    // Output full but the stream has not ended: is there more?
                    var scratch: UInt8 = 0
                    rc = withUnsafeMutablePointer(to: &scratch) { p in
                        stream.pointee.next_out = p
                        stream.pointee.avail_out = 1
                        return CZlib.inflate(stream, Z_FINISH)
                    }
                    if stream.pointee.avail_out == 0 {
                        outcome = .inflatedExceedsDeclared(frame: frame, declared: expectedLength)
                        return
                    }
                }
                switch rc {
                case Z_STREAM_END:
                    if stream.pointee.avail_in != 0 {
                        outcome = .corruptDeflateStream(frame: frame, detail: "\(stream.pointee.avail_in) byte(s) after the end of the stream")
                    } else if count != expectedLength {
                        outcome = .inflatedLengthMismatch(frame: frame, declared: expectedLength, actual: count)
                    }
                case Z_DATA_ERROR:
                    let message = stream.pointee.msg.map { String(cString: $0) } ?? "invalid data"
                    outcome = .corruptDeflateStream(frame: frame, detail: message)
                case Z_OK, Z_BUF_ERROR:
                    // All input consumed without reaching the end-of-stream marker.
                    outcome = .corruptDeflateStream(frame: frame, detail: "stream is truncated (after \(count) of \(expectedLength) bytes)")
                default:
                    outcome = .zlibFailure(operation: "inflate", code: rc)
                }
            }
        }
        if let outcome { throw outcome }
        return output
    }
}

/// Per-thread: owns C state that one thread at a time may use; never shared.
@available(*, unavailable)
extension Deflater: Sendable {}

/// Per-thread: owns C state that one thread at a time may use; never shared.
@available(*, unavailable)
extension Inflater: Sendable {}
