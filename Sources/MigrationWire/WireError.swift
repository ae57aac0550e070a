/// Every way bytes on the wire, a payload or a compression setting can be wrong.
/// Cases name the frame type and the field so an operator can tell which end
/// misbehaved and where, without a packet capture.
public enum WireError: Error, Sendable, Equatable, CustomStringConvertible {
    // Header
    case badFrameMagic(found: UInt32)
    case unknownFrameType(UInt16)
    case unknownFlags(frame: FrameType, flags: UInt16)
    case payloadTooLarge(frame: FrameType, declared: Int, limit: Int)
    /// A later sequence number than expected: a frame was lost or reordered.
    case sequenceGap(expected: UInt64, got: UInt64)
    /// An earlier sequence number than expected: a frame was duplicated or replayed.
    case sequenceReplay(expected: UInt64, got: UInt64)

    // Order and state
    case unexpectedFrame(type: FrameType, state: DecoderState)
    case wrongRole(frame: FrameType, sender: Role)
    case deviceIndexOutOfRange(frame: FrameType, index: UInt32, deviceCount: Int)
    /// A non-device frame with a non-zero device field.
    case unexpectedDeviceIndex(frame: FrameType, index: UInt32)
    case dataAfterDeviceEnd(frame: FrameType, device: UInt32)
    case phaseRegression(device: UInt32)
    case completeBeforeDeviceEnd(device: UInt32)
    case encodingNotAnnounced(frame: FrameType, encoding: String)
    /// A DEVICE_DATA continuation (part `next`) with no chunk of that device open.
    case continuationWithoutStart(device: UInt32)
    /// A frame other than the open chunk's continuation (a new chunk, another
    /// device's frame, DEVICE_END, …) before the chunk reached its declared length.
    case chunkIncomplete(device: UInt32, missing: UInt64, interruptedBy: FrameType, frameDevice: UInt32)
    /// A continuation that carries more than the open chunk still lacks.
    case chunkOverrun(device: UInt32, missing: UInt64, piece: UInt64)
    /// A continuation whose phase differs from its chunk's first piece.
    case chunkPhaseChanged(device: UInt32)

    // Version 2: acknowledgements and the resume handshake (§13)
    /// A handshake frame (RESUME, RESUME_ACCEPT, REFUSE, or an ABORT before the first
    /// numbered frame) whose header sequence is not 0: handshake frames are unnumbered.
    case handshakeFrameNumbered(frame: FrameType, sequence: UInt64)
    /// A frame the resume handshake does not allow at this step.
    case unexpectedHandshakeFrame(type: FrameType, step: ResumeHandshakeStep)
    /// A RESUME naming another session than the one this connection is resuming.
    case sessionMismatch(frame: FrameType)
    /// ACK or RESUME_ACCEPT with per-device offsets for another number of devices than HELLO announced.
    case positionDeviceCount(frame: FrameType, declared: Int, announced: Int)
    /// ACK or RESUME_ACCEPT reports less than an earlier one did (a position never goes back).
    case positionRegressed(frame: FrameType, field: String, previous: UInt64, got: UInt64)
    /// A position (ACK, RESUME_ACCEPT) whose resume point the source cannot replay
    /// from: below the oldest frame it retains, or beyond the last frame it sent.
    case resumePointOutsideWindow(frame: FrameType, resumePoint: UInt64, oldest: UInt64, next: UInt64)
    /// A position whose DEVICE_DATA bytes for a device differ from what the source sent below it.
    case positionMismatch(frame: FrameType, device: UInt32, reported: UInt64, sent: UInt64)
    /// RESUME_ACCEPT continues the destination's stream below a sequence already received.
    case destinationSequenceRegressed(expected: UInt64, got: UInt64)
    /// RESUME_ACCEPT reports less progress than the destination's frames already showed.
    case destinationProgressRegressed(previous: DestinationProgress, got: DestinationProgress)

    // Version 3: several streams (§14)
    /// PAGES on a stream that does not own one of its PFNs (§14.4).
    case pageOnForeignStream(pfn: UInt64, stream: Int, owner: Int)
    /// STREAM_END naming another stream, or a frame count that is not the frames the stream carried.
    case streamEndMismatch(field: String, declared: UInt64, actual: UInt64)
    /// ACK or RESUME_ACCEPT whose stream tail names another number of extra streams than
    /// the session's S − 1 (none in a one-stream session, §14.5).
    case positionStreamCount(frame: FrameType, declared: Int, expected: Int)

    // Version 6: page copies (§17)
    /// A copy segment whose source pages overlap the pages it writes.
    case copyOverlaps(startPFN: UInt64, sourcePFN: UInt64, count: UInt64)

    // HELLO
    case badHelloMagic(found: [UInt8])
    case unsupportedVersion(UInt16, supported: UInt16)
    case unexpectedRole(expected: Role, got: Role)
    case tooManyDevices(declared: Int, limit: Int)

    // Payload structure
    case truncated(frame: FrameType, field: String)
    case trailingBytes(frame: FrameType, count: Int)
    case invalidPayloadLength(frame: FrameType, expected: Int, actual: Int)
    case countExceedsPayload(frame: FrameType, field: String, count: UInt64, remainingBytes: Int)
    case invalidValue(frame: FrameType, field: String, value: UInt64)
    case unknownEncoding(frame: FrameType, value: UInt8)
    case invalidUTF8(frame: FrameType, field: String)
    case invalidPageSize(frame: FrameType, pageSize: UInt64)
    case bitmapLengthMismatch(totalPFNs: UInt64, expected: Int, actual: Int)
    case tooManyPFNs(frame: FrameType, count: UInt64, limit: UInt64)
    case pfnOutsideMemory(frame: FrameType, startPFN: UInt64, count: UInt64)
    case pageSizeMismatch(frame: FrameType, pfn: UInt64, declared: UInt64, announced: UInt32)
    /// A raw or zero payload whose size is not the one its header fields imply.
    case payloadSizeMismatch(frame: FrameType, field: String, expected: Int, actual: Int)

    // Stream end (see FrameDecoder.finish())
    case truncatedHeader(bufferedBytes: Int)
    case truncatedPayload(frame: FrameType, declared: Int, buffered: Int)

    // Compression. `frame` is nil when the codec is used outside a frame.
    case inflatedTooLarge(frame: FrameType?, declared: Int, limit: Int)
    case inflatedLengthMismatch(frame: FrameType?, declared: Int, actual: Int)
    /// Inflating produced more than the declared length; stopped there (no bomb).
    case inflatedExceedsDeclared(frame: FrameType?, declared: Int)
    case corruptDeflateStream(frame: FrameType?, detail: String)
    case zlibFailure(operation: String, code: Int32)
    /// A zstd payload that is not one valid frame (bad magic, corrupt, bytes after it, a dictionary).
    case corruptZstdFrame(frame: FrameType?, detail: String)
    /// A zstd frame whose header has no content size (nil) or another one than the declared length.
    case zstdContentSize(frame: FrameType?, declared: Int, inFrame: UInt64?)
    /// Version 4 (§15): a zstd lane segment naming a lane at or above the lanes per
    /// stream the source announced (or the decoder has).
    case laneOutOfRange(frame: FrameType, lane: UInt8, lanes: Int)
    /// Version 4: a stream started a lane when the session's L were all started already (§15.2).
    case lanesExhausted(frame: FrameType, lane: UInt8, lanes: Int)
    /// A zstd lane segment whose payload does not decode to exactly its pages: the
    /// input ran out first, input was left over, or more output was pending.
    case zstdLaneLengthMismatch(frame: FrameType?, declared: Int, detail: String)
    /// A local codec call failed (not the peer's data): nothing may be sent for it.
    case compressionFailed(library: String, operation: String, detail: String)
    case invalidCompressionPolicy(String)
    case invalidCompressionLevel(Int)
    case invalidZstdLevel(Int)
    case unalignedPages(byteCount: Int, pageSize: Int)
    /// A size the format (or a codec's API) cannot represent, e.g. a payload ≥ 4 GiB.
    case sizeNotRepresentable(what: String, bytes: UInt64, limit: UInt64)

    public var description: String {
        func inFrame(_ f: FrameType?) -> String { f.map { " in \($0)" } ?? "" }
        switch self {
        case .badFrameMagic(let found):
            return "frame header magic is 0x\(String(found, radix: 16)), expected \"VMIG\": the stream is not vfio-migrate v1 framing or is out of sync"
        case .unknownFrameType(let t):
            return "unknown frame type \(t)"
        case .unknownFlags(let f, let flags):
            return "\(f) frame has unknown flags 0x\(String(flags, radix: 16)) (none are defined in protocol v1)"
        case .payloadTooLarge(let f, let declared, let limit):
            return "\(f) frame declares a \(declared)-byte payload, above the \(limit)-byte limit"
        case .sequenceGap(let e, let g):
            return "sequence gap: expected frame #\(e), got #\(g) (frames lost or reordered)"
        case .sequenceReplay(let e, let g):
            return "sequence replay: expected frame #\(e), got #\(g) again (duplicated or reordered frame)"
        case .unexpectedFrame(let t, let state):
            return "\(t) frame not allowed \(state)"
        case .wrongRole(let f, let sender):
            return "a \(sender) may not send \(f) frames"
        case .deviceIndexOutOfRange(let f, let i, let n):
            return "\(f) frame names device #\(i), but only \(n) device(s) were announced"
        case .unexpectedDeviceIndex(let f, let i):
            return "\(f) frame carries device index \(i); it is not device-specific and must carry 0"
        case .dataAfterDeviceEnd(let f, let d):
            return "\(f) frame for device #\(d) after its DEVICE_END"
        case .phaseRegression(let d):
            return "pre-copy DEVICE_DATA for device #\(d) after its stop-and-copy data"
        case .completeBeforeDeviceEnd(let d):
            return "COMPLETE before DEVICE_END of device #\(d)"
        case .encodingNotAnnounced(let f, let e):
            return "\(f) frame uses encoding \(e), which the sender's HELLO did not announce"
        case .continuationWithoutStart(let d):
            return "DEVICE_DATA continuation for device #\(d) without a first piece: no chunk of that device is open"
        case .chunkIncomplete(let d, let missing, let f, let fd):
            return "\(f) frame for device #\(fd) while device #\(d)'s chunk still lacks \(missing) byte(s): a split chunk's pieces must follow each other"
        case .chunkOverrun(let d, let missing, let piece):
            return "DEVICE_DATA continuation for device #\(d) carries \(piece) byte(s); its chunk lacks only \(missing)"
        case .chunkPhaseChanged(let d):
            return "DEVICE_DATA continuation for device #\(d) changes phase within one chunk"
        case .handshakeFrameNumbered(let f, let seq):
            return "\(f) frame carries sequence \(seq); frames of the resume handshake are unnumbered and carry 0"
        case .unexpectedHandshakeFrame(let t, let step):
            return "\(t) frame not allowed in the resume handshake \(step)"
        case .sessionMismatch(let f):
            return "\(f) names another session than the one being resumed"
        case .positionDeviceCount(let f, let declared, let announced):
            return "\(f) reports offsets for \(declared) device(s); HELLO announced \(announced)"
        case .positionRegressed(let f, let field, let previous, let got):
            return "\(f) \(field) went back from \(previous) to \(got); a reported position never decreases"
        case .resumePointOutsideWindow(let f, let r, let oldest, let next):
            return "\(f) resumes at #\(r), but the source can only send again #\(oldest)..<#\(next): the frames the destination lacks are gone"
        case .positionMismatch(let f, let d, let reported, let sent):
            return "\(f) reports \(reported) byte(s) of device #\(d), but the source sent \(sent) below that sequence: the two sides disagree about the device stream"
        case .destinationSequenceRegressed(let e, let g):
            return "RESUME_ACCEPT continues the destination's frames at #\(g), but #\(e) was the next expected: its stream cannot go back"
        case .destinationProgressRegressed(let previous, let got):
            return "RESUME_ACCEPT reports the destination \(got), but its frames had already shown it \(previous)"
        case .pageOnForeignStream(let pfn, let stream, let owner):
            return "PAGES on stream \(stream) carries PFN \(pfn), which stream \(owner) owns: every page travels on the one stream its PFN maps to"
        case .streamEndMismatch(let field, let declared, let actual):
            return "STREAM_END declares \(field) \(declared), but it is \(actual)"
        case .positionStreamCount(let f, let declared, let expected):
            return "\(f) reports positions of \(declared) extra stream(s); the session has \(expected) (its streams minus stream 0)"
        case .copyOverlaps(let start, let source, let count):
            return "PAGES copy segment writes \(count) page(s) at PFN \(start) from PFN \(source): the pages it reads and writes overlap"
        case .badHelloMagic(let found):
            return "HELLO magic is \(found.map { String($0, radix: 16) }), expected \"VFIO-MIG\": the peer is not vfio-migrate"
        case .unsupportedVersion(let v, let supported):
            return "peer speaks protocol version \(v); this build supports version \(supported)"
        case .unexpectedRole(let expected, let got):
            return "peer announces role \(got), expected \(expected) (both ends configured as the same side?)"
        case .tooManyDevices(let declared, let limit):
            return "HELLO announces \(declared) devices, above the limit of \(limit)"
        case .truncated(let f, let field):
            return "\(f) payload ends inside field '\(field)'"
        case .trailingBytes(let f, let n):
            return "\(f) payload has \(n) unexpected trailing byte(s)"
        case .invalidPayloadLength(let f, let expected, let actual):
            return "\(f) payload is \(actual) bytes; it must be exactly \(expected)"
        case .countExceedsPayload(let f, let field, let count, let remaining):
            return "\(f) field '\(field)' = \(count) cannot fit in the \(remaining) payload byte(s) left"
        case .invalidValue(let f, let field, let v):
            return "\(f) field '\(field)' has invalid value \(v)"
        case .unknownEncoding(let f, let v):
            return "\(f) frame uses unknown encoding \(v)"
        case .invalidUTF8(let f, let field):
            return "\(f) field '\(field)' is not valid UTF-8"
        case .invalidPageSize(let f, let ps):
            return "\(f) frame has page size \(ps); it must be a non-zero power of two"
        case .bitmapLengthMismatch(let total, let expected, let actual):
            return "DIRTY_BITMAP for \(total) PFNs carries a \(actual)-byte bitmap; it must be exactly \(expected) bytes"
        case .tooManyPFNs(let f, let count, let limit):
            return "\(f) frame covers \(count) PFNs, above the per-frame limit of \(limit)"
        case .pfnOutsideMemory(let f, let start, let count):
            return "\(f) frame covers PFNs \(start)..<\(start &+ count) (\(count) pages), outside the announced guest memory"
        case .pageSizeMismatch(let f, let pfn, let declared, let announced):
            return "\(f) frame uses page size \(declared) at PFN \(pfn), but that memory range was announced with page size \(announced)"
        case .payloadSizeMismatch(let f, let field, let expected, let actual):
            return "\(f) \(field) is \(actual) bytes; its header implies \(expected)"
        case .truncatedHeader(let n):
            return "stream ended inside a frame header (\(n) of 24 bytes)"
        case .truncatedPayload(let f, let declared, let buffered):
            return "stream ended inside a \(f) payload (\(buffered) of \(declared) bytes)"
        case .inflatedTooLarge(let f, let declared, let limit):
            return "declared inflated length \(declared)\(inFrame(f)) exceeds the \(limit)-byte limit"
        case .inflatedLengthMismatch(let f, let declared, let actual):
            return "deflate stream\(inFrame(f)) inflates to \(actual) bytes, declared \(declared)"
        case .inflatedExceedsDeclared(let f, let declared):
            return "deflate stream\(inFrame(f)) inflates past its declared \(declared) bytes; stopped there"
        case .corruptDeflateStream(let f, let detail):
            return "corrupt deflate stream\(inFrame(f)): \(detail)"
        case .zlibFailure(let op, let code):
            return "zlib \(op) failed with code \(code)"
        case .corruptZstdFrame(let f, let detail):
            return "corrupt zstd frame\(inFrame(f)): \(detail)"
        case .zstdContentSize(let f, let declared, let found):
            return "zstd frame\(inFrame(f)) " + (found.map { "header says \($0) bytes of content; the payload declares \(declared)" }
                ?? "has no content size in its header (required; the payload declares \(declared) bytes)")
        case .laneOutOfRange(let f, let lane, let lanes):
            return "\(f) segment uses zstd lane \(lane), but the source announced \(lanes) lane(s)" + (lanes == 0 ? " (none)" : "")
        case .lanesExhausted(let f, let lane, let lanes):
            return "\(f) segment starts zstd lane \(lane) on another stream, but the session's \(lanes) lane(s) are all started (L counts every stream's lanes)"
        case .zstdLaneLengthMismatch(let f, let declared, let detail):
            return "zstd lane segment\(inFrame(f)) does not decode to exactly its \(declared) bytes: \(detail)"
        case .compressionFailed(let library, let op, let detail):
            return "\(library) \(op) failed: \(detail)"
        case .invalidCompressionPolicy(let text):
            return "invalid compression policy '\(text)': use none, zlib:1 … zlib:9, zstd:-50 … zstd:19 (not 0), or auto"
        case .invalidCompressionLevel(let level):
            return "invalid deflate level \(level): use 0 … 9"
        case .invalidZstdLevel(let level):
            return "invalid zstd level \(level): use -50 … -1 or 1 … 19"
        case .unalignedPages(let n, let ps):
            return "\(n) bytes are not a whole number of \(ps)-byte pages"
        case .sizeNotRepresentable(let what, let n, let limit):
            return "\(what) of \(n) bytes cannot be represented (limit \(limit))"
        }
    }
}

/// Where a resume handshake (§13.5) stands, as its decoder sees the peer's frames.
public enum ResumeHandshakeStep: Sendable, Equatable, CustomStringConvertible {
    /// Before the peer's RESUME (a destination may greet with REFUSE or HELLO instead).
    case awaitingResume
    /// Destination's RESUME received: its RESUME_ACCEPT, REFUSE or ABORT is due.
    case awaitingAccept
    /// The peer completed its part: the connection carries the session's numbered frames.
    case finished
    /// The peer refused, aborted or greeted with a new session: nothing more on this connection.
    case closed

    public var description: String {
        switch self {
        case .awaitingResume: "before the peer's RESUME"
        case .awaitingAccept: "before RESUME_ACCEPT"
        case .finished: "after it finished"
        case .closed: "after the connection was refused"
        }
    }
}

/// Where a decoder is in its peer's frame sequence; errors name it.
public enum DecoderState: Sendable, Equatable, CustomStringConvertible {
    case awaitingHello
    /// HELLO received: a source is transferring, a destination is preparing.
    case established
    case complete
    case committed
    case ready
    case resumed
    case aborted

    public var description: String {
        switch self {
        case .awaitingHello: "before HELLO"
        case .established: "after HELLO"
        case .complete: "after COMPLETE"
        case .committed: "after COMMIT"
        case .ready: "after READY"
        case .resumed: "after RESUMED"
        case .aborted: "after ABORT"
        }
    }
}

extension Role: CustomStringConvertible {
    public var description: String { self == .source ? "source" : "destination" }
}
