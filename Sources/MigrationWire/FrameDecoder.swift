/// Incremental decoder for one direction of a session: checks limits before
/// allocating, sequence contiguity, state rules (e.g. nothing after COMPLETE,
/// PFNs inside the announced memory once `memory` is set).
///
/// Everything the 24-byte header can be wrong about (magic, type, flags, payload
/// length, sequence, sender role, state, device index) is rejected as soon as the
/// header is buffered, before waiting for the payload. Errors are sticky: after one,
/// `next()` keeps throwing it, so a caller cannot resynchronise on garbage.
///
/// Version 2 (§13): one decoder per session direction outlives its connections.
/// `suspend()` when a connection is lost (a partial frame is dropped, the stream
/// state kept), a `ResumeHandshakeDecoder` reads the new connection's handshake,
/// then `resume()` / `resume(with:)` and the stream continues where it stood.
public struct FrameDecoder: Sendable {
    public static let headerSize: Int = FrameHeader.size

    /// The role of the side whose frames this decoder reads.
    public let peer: Role
    public let limits: WireLimits
    /// The session's protocol version: 1, or what ALPN negotiated.
    public let version: ProtocolVersion
    public private(set) var state: DecoderState = .awaitingHello
    /// Between `suspend()` and `resume()`: no connection feeds this decoder.
    public private(set) var isSuspended = false

    private var buffer: [UInt8] = []
    private var readIndex = 0
    /// Payloads of frames decoded from `buffer` are views of it: writing into it
    /// again would copy it whole (copy on write), so the next bytes start a new one.
    private var bufferLent = false
    /// The least room a new receive buffer gets: control frames and small chunks
    /// share one; a larger frame gets a buffer of its own size (`fill`).
    private static let minimumBufferCapacity = 64 << 10
    private var expectedSequence: UInt64 = 0
    private var pendingHeader: FrameHeader?
    private var failure: WireError?

    private var announcedMemory: [MemoryRange] = []
    private var memoryIsSet = false
    private var announcedDeviceCount: Int?
    private var announcedLaneCount: Int?
    private var peerEncodings: Set<Encoding> = [.raw]
    private var endedDevices: Set<UInt32> = []
    private var stopCopyDevices: Set<UInt32> = []
    /// A chunk sent in pieces whose continuations are still due (§5.2).
    private var openChunk: OpenChunk?
    /// Decoded DEVICE_DATA bytes per device index, for the stream position (§13.3).
    private var deviceBytes: [UInt32: UInt64] = [:]
    /// The destination's last reported position (ACK, RESUME_ACCEPT): never goes back.
    public private(set) var acknowledged: StreamPosition?
    /// After a resume, until the peer's first numbered frame: it may still give up
    /// with an unnumbered ABORT (§13.5).
    private var awaitingFirstNumbered = false
    /// Version 3 (§14): this decoder's stream (0: the session's first connection) and
    /// how the session spreads pages; a page of a PFN another stream owns is an error.
    private var streamIndex = 0
    private var routing: StreamRouting?
    /// Version 3, source: the session's streams S (its own HELLO's): ACK and
    /// RESUME_ACCEPT carry S − 1 stream sequences, none when S is 1 (§14.5).
    public var sessionStreams = 1

    private struct OpenChunk {
        var device: UInt32
        var phase: Phase
        var missing: UInt64
    }

    /// `peer` is the role of the side whose frames this decoder reads; frames that
    /// side may not send (e.g. READY from a source) are protocol errors. A version-1
    /// decoder knows no frame type of a later version (they are unknown types).
    public init(peer: Role, limits: WireLimits = .default, version: ProtocolVersion = .v1) {
        self.peer = peer
        self.limits = limits
        self.version = version
    }

    /// Version 3, destination: an extra stream (§14.4), joined after the session's
    /// HELLOs, which carries only PAGES of the PFNs it owns, KEEPALIVE, ABORT and at
    /// last STREAM_END. Its numbering starts at 0; it has no HELLO of its own.
    /// After a resume (§14.5) the stream's numbering goes on at `nextSequence`, the
    /// position the destination reported for it.
    /// Version 4 and later: `version` is the session's, and the engine sets `laneCount`.
    public init(joinedStream index: Int, routing: StreamRouting, memory: [MemoryRange], encodings: [Encoding],
                limits: WireLimits = .default, nextSequence: UInt64 = 0, version: ProtocolVersion = .v3) {
        precondition(index >= 1 && index < routing.count, "an extra stream's index is 1..<count")
        precondition(version >= .v3, "extra streams are version 3 and later")
        self.init(peer: .source, limits: limits, version: version)
        streamIndex = index
        expectedSequence = nextSequence
        self.routing = routing
        self.memory = memory
        announcedDeviceCount = 0
        peerEncodings = Set(encodings).union([.raw])
        state = .established
    }

    /// Guest-memory ranges announced in HELLO; PAGES/DIRTY_BITMAP are checked against them.
    /// Decoding the peer's HELLO sets this unless the caller set it first.
    public var memory: [MemoryRange] {
        get { announcedMemory }
        set { announcedMemory = newValue; memoryIsSet = true }
    }

    /// Version 4 (§15): the source's zstd lanes (the session's L); a lane segment must name a
    /// lane below it. Decoding the source's HELLO sets this unless the caller set it
    /// first (an extra stream has no HELLO: the engine sets it).
    public var laneCount: Int {
        get { announcedLaneCount ?? 0 }
        set { announcedLaneCount = newValue }
    }

    /// Number of devices announced in HELLO; device indices are checked against it.
    /// Decoding the peer's HELLO sets this unless the caller set it first.
    public var deviceCount: Int? {
        get { announcedDeviceCount }
        set { announcedDeviceCount = newValue }
    }

    public mutating func feed(_ bytes: [UInt8]) {
        precondition(!isSuspended, "a suspended decoder has no connection: resume() it first")
        // Nothing pending: take the caller's array as the buffer (no copy of the
        // bulk of the stream when reads line up with frames).
        if readIndex == buffer.count {
            buffer = bytes
            readIndex = 0
            bufferLent = false
            return
        }
        if bufferLent {
            startNewBuffer(room: bytes.count)
        } else if readIndex > 0 && readIndex >= buffer.count / 2 {
            // Drop consumed bytes before growing, so the buffer holds at most one frame plus what was fed.
            buffer.removeFirst(readIndex)
            readIndex = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// How many bytes complete what is pending: the rest of the frame whose header
    /// was decoded, else the rest of a header (call after `nextMessage()` returned
    /// nil). Reading that much, no more, keeps a large frame in a buffer of its own.
    public var bytesWanted: Int {
        let buffered = bufferedByteCount
        guard let header = pendingHeader else { return max(1, FrameHeader.size - buffered) }
        return max(1, FrameHeader.size + header.payloadLength - buffered)
    }

    /// Receives up to `maxCount` bytes straight into the decoder's buffer: `read`
    /// appends them to the span (the TLS layer decrypts into it; this module does
    /// no I/O). Returns how many arrived; 0 is the end of the stream. The buffer
    /// gets room for the whole pending frame when its header is known, so payload
    /// views are never copied out of a buffer that is too small.
    public mutating func fill<E: Error>(maxCount: Int, _ read: (inout OutputSpan<UInt8>) throws(E) -> Void) throws(E) -> Int {
        precondition(!isSuspended, "a suspended decoder has no connection: resume() it first")
        precondition(maxCount > 0, "fill(maxCount:) needs room for at least one byte")
        let frameRoom = pendingHeader.map { FrameHeader.size + $0.payloadLength - bufferedByteCount } ?? 0
        let room = max(maxCount, frameRoom)
        if bufferLent || buffer.capacity - buffer.count < room {
            startNewBuffer(room: room)
        }
        let before = buffer.count
        try buffer.append(addingCapacity: maxCount, initializingWith: read)
        return buffer.count - before
    }

    /// Moves the undecoded bytes to a new buffer with `room` more bytes of capacity
    /// (the old one stays with the payload views that hold it).
    private mutating func startNewBuffer(room: Int) {
        var fresh: [UInt8] = []
        fresh.reserveCapacity(max(bufferedByteCount + room, FrameDecoder.minimumBufferCapacity))
        fresh.append(contentsOf: buffer[readIndex...])
        buffer = fresh
        readIndex = 0
        bufferLent = false
    }

    /// The next whole frame, nil if more bytes are needed. For version 1; a
    /// version-2 session also carries ACK frames: read it with `nextMessage()`.
    public mutating func next() throws(WireError) -> Frame? {
        precondition(version == .v1, "a version-2 stream carries ACK frames: read it with nextMessage()")
        switch try nextMessage() {
        case .frame(let frame): return frame
        case .resumption: preconditionFailure("no resumption frame decodes in version 1")
        case nil: return nil
        }
    }

    /// The next whole frame of the stream or ACK, nil if more bytes are needed.
    public mutating func nextMessage() throws(WireError) -> WireMessage? {
        if let failure { throw failure }
        do {
            return try step()
        } catch {
            failure = error
            throw error
        }
    }

    /// Where the peer's stream stands: the next sequence expected and the DEVICE_DATA
    /// bytes per device received below it. A destination reports it in ACK and
    /// RESUME_ACCEPT (§13.3); it counts frames decoded, so every frame below it is
    /// held by this side and will be applied (or the session ends with ABORT).
    public var position: StreamPosition {
        let count = announcedDeviceCount ?? 0
        return StreamPosition(nextSequence: expectedSequence, deviceBytes: (0..<UInt32(count)).map { deviceBytes[$0] ?? 0 })
    }

    /// The connection is lost (§13.4): a partial frame is dropped, everything decoded
    /// stays. Only a version-2 session that got past HELLO can resume. Returns the
    /// position at the loss (the destination's resume point, once no connection feeds it).
    @discardableResult
    public mutating func suspend() -> StreamPosition {
        precondition(version >= .v2 && state != .awaitingHello, "only an established version-2 session can be suspended")
        precondition(failure == nil, "a decoder that rejected its peer's bytes ends the session; it does not resume")
        buffer = []
        readIndex = 0
        bufferLent = false
        pendingHeader = nil
        isSuspended = true
        return position
    }

    /// Destination side: the source's RESUME was verified and RESUME_ACCEPT sent;
    /// the source's frames continue at `position.nextSequence` on the new connection.
    public mutating func resume() {
        precondition(peer == .source, "the source's decoder of the destination resumes with(accept)")
        precondition(isSuspended, "resume() follows suspend()")
        isSuspended = false
        awaitingFirstNumbered = true
    }

    /// Source side: the destination's RESUME_ACCEPT. Its frames continue at its next
    /// sequence (its direction is not replayed: the reported progress stands for the
    /// frames lost with the connection), which must not go back, nor may its
    /// progress or its position.
    public mutating func resume(with accept: ResumeAccept) throws(WireError) {
        precondition(peer == .destination, "the destination's decoder of the source resumes without an accept")
        precondition(isSuspended, "resume(with:) follows suspend()")
        if let failure { throw failure }
        do throws(WireError) {
            try checkPosition(accept.position, frame: .resumeAccept)
            guard accept.destinationNextSequence >= expectedSequence else {
                throw .destinationSequenceRegressed(expected: expectedSequence, got: accept.destinationNextSequence)
            }
            let shown: DestinationProgress = switch state {
            case .ready: .ready
            case .resumed: .resumed
            default: .receiving
            }
            guard accept.progress >= shown else { throw .destinationProgressRegressed(previous: shown, got: accept.progress) }
            state = switch accept.progress {
            case .receiving: .established
            case .ready, .resuming: .ready
            case .resumed: .resumed
            }
        } catch {
            failure = error
            throw error
        }
        acknowledged = accept.position
        expectedSequence = accept.destinationNextSequence
        isSuspended = false
        awaitingFirstNumbered = true
    }

    /// Bytes buffered but not yet decoded (a non-zero value at EOF means truncation).
    public var bufferedByteCount: Int { buffer.count - readIndex }

    /// Call at end of stream, after `next()` returned nil: throws `truncatedHeader` or
    /// `truncatedPayload` if a partial frame is buffered (or the error already thrown).
    public func finish() throws(WireError) {
        if let failure { throw failure }
        let buffered = bufferedByteCount
        guard buffered > 0 else { return }
        if let header = pendingHeader {
            throw WireError.truncatedPayload(frame: header.type, declared: header.payloadLength, buffered: buffered - FrameHeader.size)
        }
        if buffered >= FrameHeader.size {
            // A whole header nobody asked `next()` for: still a truncated payload.
            let header = try FrameHeader.parse(buffer, at: readIndex, version: version)
            throw WireError.truncatedPayload(frame: header.type, declared: header.payloadLength, buffered: buffered - FrameHeader.size)
        }
        throw WireError.truncatedHeader(bufferedBytes: buffered)
    }

    private mutating func step() throws(WireError) -> WireMessage? {
        let header: FrameHeader
        if let pending = pendingHeader {
            header = pending
        } else {
            guard bufferedByteCount >= FrameHeader.size else { return nil }
            header = try FrameHeader.parse(buffer, at: readIndex, version: version)
            try check(header)
            pendingHeader = header
        }
        let payloadStart = readIndex + FrameHeader.size
        guard buffer.count - payloadStart >= header.payloadLength else { return nil }

        var reader = ByteReader(buffer, range: payloadStart..<(payloadStart + header.payloadLength), frame: header.type)
        let message: WireMessage
        if header.type.isResumption {
            let body = try ResumptionBody.parsePayload(header.type, &reader, limits: limits, version: version)
            try apply(body, sequence: header.sequence)
            message = .resumption(ResumptionFrame(sequence: header.sequence, body: body))
        } else {
            let body = try FrameBody.parsePayload(header.type, &reader, limits: limits, version: version)
            try apply(body, device: header.device)
            message = .frame(Frame(device: header.device, sequence: header.sequence, body: body))
        }

        readIndex = payloadStart + header.payloadLength
        pendingHeader = nil
        // An ABORT that gives up a resume before the first numbered frame has no number.
        if !(awaitingFirstNumbered && header.sequence == 0) { expectedSequence += 1 }
        awaitingFirstNumbered = false
        if header.type == .deviceData || header.type == .pages { bufferLent = true }
        if readIndex == buffer.count {
            // A lent buffer belongs to its views now; the next bytes start a new one.
            if bufferLent { buffer = [] } else { buffer.removeAll(keepingCapacity: true) }
            readIndex = 0
            bufferLent = false
        }
        return message
    }

    /// Header-only rules, in the order an operator would want them reported.
    private func check(_ h: FrameHeader) throws(WireError) {
        guard h.payloadLength <= limits.maxPayload else {
            throw .payloadTooLarge(frame: h.type, declared: h.payloadLength, limit: limits.maxPayload)
        }
        let unnumberedAbort = awaitingFirstNumbered && h.sequence == 0 && h.type == .abort
        if !unnumberedAbort {
            if h.sequence > expectedSequence { throw .sequenceGap(expected: expectedSequence, got: h.sequence) }
            if h.sequence < expectedSequence { throw .sequenceReplay(expected: expectedSequence, got: h.sequence) }
        }
        guard h.type.isSent(by: peer) else { throw .wrongRole(frame: h.type, sender: peer) }
        guard isAllowedNow(h.type) else { throw .unexpectedFrame(type: h.type, state: state) }
        // While a chunk is open only its continuations (and keep-alives, ABORT) may come.
        if let open = openChunk, h.type != .keepAlive, h.type != .abort, h.type != .deviceData || h.device != open.device {
            throw .chunkIncomplete(device: open.device, missing: open.missing, interruptedBy: h.type, frameDevice: h.device)
        }

        if h.type.isDeviceSpecific {
            if let count = announcedDeviceCount, Int(h.device) >= count {
                throw .deviceIndexOutOfRange(frame: h.type, index: h.device, deviceCount: count)
            }
            if endedDevices.contains(h.device) { throw .dataAfterDeviceEnd(frame: h.type, device: h.device) }
        } else if h.device != 0 {
            throw .unexpectedDeviceIndex(frame: h.type, index: h.device)
        }
        if h.type == .complete, let count = announcedDeviceCount {
            for d in 0..<UInt32(count) where !endedDevices.contains(d) { throw .completeBeforeDeviceEnd(device: d) }
        }
    }

    private func isAllowedNow(_ type: FrameType) -> Bool {
        if streamIndex > 0 { return state == .established && [.pages, .keepAlive, .abort, .streamEnd].contains(type) }
        switch (peer, state) {
        case (_, .awaitingHello): return type == .hello
        case (_, .aborted): return false
        case (.source, .established):
            return [.deviceData, .dirtyBitmap, .pages, .iterationEnd, .deviceEnd, .complete, .abort, .keepAlive].contains(type)
        case (.source, .complete): return [.commit, .abort, .keepAlive].contains(type)
        // ABORT after COMMIT cannot undo the commit; it only tells the destination why the source gives up.
        case (.source, .committed): return [.abort, .keepAlive].contains(type)
        // ACK (version 2 only: older decoders do not know the type) while source frames still matter.
        case (.destination, .established): return [.ready, .abort, .keepAlive, .ack].contains(type)
        case (.destination, .ready): return [.resumed, .abort, .keepAlive, .ack].contains(type)
        case (.destination, .resumed): return type == .keepAlive
        default: return false
        }
    }

    /// Body-level session rules, then the state transition.
    private mutating func apply(_ body: FrameBody, device: UInt32) throws(WireError) {
        switch body {
        case .hello(let hello):
            guard hello.role == peer else { throw .unexpectedRole(expected: peer, got: hello.role) }
            if !memoryIsSet { announcedMemory = hello.memory; memoryIsSet = true }
            if announcedDeviceCount == nil { announcedDeviceCount = hello.devices.count }
            if peer == .source, announcedLaneCount == nil { announcedLaneCount = Int(hello.streams?.lanes ?? 0) }
            peerEncodings = Set(hello.encodings).union([.raw])
            // Version 3: the source's stream count and block decide which pages stream 0 may carry.
            if peer == .source, version >= .v3, let offer = hello.streams, offer.count > 1 { routing = StreamRouting(offer) }
            state = .established
        case .deviceData(let data):
            if data.encoding != .raw && !peerEncodings.contains(data.encoding) {
                throw .encodingNotAnnounced(frame: .deviceData, encoding: "\(data.encoding)")
            }
            try track(data, device: device)
            deviceBytes[device, default: 0] += UInt64(data.originalLength)
            switch data.phase {
            case .precopy: if stopCopyDevices.contains(device) { throw .phaseRegression(device: device) }
            case .stopcopy: stopCopyDevices.insert(device)
            }
        case .dirtyBitmap(let bitmap):
            try checkInsideMemory(.dirtyBitmap, start: bitmap.startPFN, count: bitmap.totalPFNs, pageSize: bitmap.pageSize)
        case .pages(let pages):
            for segment in pages.segments {
                if let needed = segment.encoding.announcedAs, !peerEncodings.contains(needed) {
                    throw .encodingNotAnnounced(frame: .pages, encoding: "\(needed)")
                }
                if segment.encoding == .zstdLane, Int(segment.lane) >= laneCount {
                    throw .laneOutOfRange(frame: .pages, lane: segment.lane, lanes: laneCount)
                }
                try checkPlacement(start: segment.startPFN, count: UInt64(segment.pageCount), pageSize: UInt64(pages.pageSize))
                if let source = segment.copySourcePFN { try checkCopy(segment, from: source, pageSize: UInt64(pages.pageSize)) }
            }
        case .deviceEnd: endedDevices.insert(device)
        case .complete: state = .complete
        case .commit: state = .committed
        case .ready: state = .ready
        case .resumed: state = .resumed
        case .abort: state = .aborted
        case .iterationEnd, .keepAlive: break
        }
    }

    /// Resumption frames in the numbered stream: only ACK and STREAM_END get here (the
    /// handshake frames are refused by the state rules: they belong to `ResumeHandshakeDecoder`).
    private mutating func apply(_ body: ResumptionBody, sequence: UInt64) throws(WireError) {
        switch body {
        case .ack(let position):
            try checkPosition(position, frame: .ack)
            acknowledged = position
        case .streamEnd(let end):
            guard end.streamIndex == streamIndex else {
                throw .streamEndMismatch(field: "stream index", declared: UInt64(end.streamIndex), actual: UInt64(streamIndex))
            }
            guard end.frameCount == sequence else { throw .streamEndMismatch(field: "frame count", declared: end.frameCount, actual: sequence) }
            state = .complete
        default:
            preconditionFailure("\(body.type) passed the state rules")
        }
    }

    /// A reported position names every announced device and never goes back.
    private func checkPosition(_ p: StreamPosition, frame: FrameType) throws(WireError) {
        if let count = announcedDeviceCount, p.deviceBytes.count != count {
            throw .positionDeviceCount(frame: frame, declared: p.deviceBytes.count, announced: count)
        }
        guard p.streamSequences.count == sessionStreams - 1 else {
            throw .positionStreamCount(frame: frame, declared: p.streamSequences.count, expected: sessionStreams - 1)
        }
        guard let previous = acknowledged else { return }
        for (k, (before, now)) in zip(previous.streamSequences, p.streamSequences).enumerated() where now < before {
            throw .positionRegressed(frame: frame, field: "stream \(k + 1) sequence", previous: before, got: now)
        }
        if p.nextSequence < previous.nextSequence {
            throw .positionRegressed(frame: frame, field: "next sequence", previous: previous.nextSequence, got: p.nextSequence)
        }
        for (i, (before, now)) in zip(previous.deviceBytes, p.deviceBytes).enumerated() where now < before {
            throw .positionRegressed(frame: frame, field: "device #\(i) bytes", previous: before, got: now)
        }
    }

    /// Opens, advances and closes a chunk sent in pieces. The header check already
    /// refused any other device's frame while one is open.
    private mutating func track(_ data: DeviceData, device: UInt32) throws(WireError) {
        let piece = UInt64(data.originalLength)
        switch (data.part, openChunk) {
        case (.whole, nil):
            break
        case (.first(let length), nil):
            openChunk = OpenChunk(device: device, phase: data.phase, missing: length - piece)  // > 0: parse checked
        case (.next, nil):
            throw .continuationWithoutStart(device: device)
        case (.next, var open?):
            guard data.phase == open.phase else { throw .chunkPhaseChanged(device: device) }
            guard piece <= open.missing else { throw .chunkOverrun(device: device, missing: open.missing, piece: piece) }
            open.missing -= piece
            openChunk = open.missing == 0 ? nil : open
        case (.whole, let open?), (.first, let open?):
            throw .chunkIncomplete(device: open.device, missing: open.missing, interruptedBy: .deviceData, frameDevice: device)
        }
    }

    /// Pages a PAGES segment writes or reads: inside the announced memory, of its page
    /// size, and (several streams) owned by the stream that carries the frame.
    private func checkPlacement(start: UInt64, count: UInt64, pageSize: UInt64) throws(WireError) {
        try checkInsideMemory(.pages, start: start, count: count, pageSize: pageSize)
        if let routing, let pfn = routing.firstForeignPFN(stream: streamIndex, start: start, pages: count) {
            throw .pageOnForeignStream(pfn: pfn, stream: streamIndex, owner: routing.stream(of: pfn))
        }
    }

    /// A copy segment (§17) reads pages placed as its own, apart from the pages it writes.
    private func checkCopy(_ segment: PageSegment, from source: UInt64, pageSize: UInt64) throws(WireError) {
        let count = UInt64(segment.pageCount)
        guard !source.addingReportingOverflow(count).overflow else { throw .pfnOutsideMemory(frame: .pages, startPFN: source, count: count) }
        try checkPlacement(start: source, count: count, pageSize: pageSize)
        guard source + count <= segment.startPFN || segment.startPFN + count <= source else {
            throw .copyOverlaps(startPFN: segment.startPFN, sourcePFN: source, count: count)
        }
    }

    /// PFNs start..<start+count must lie in announced ranges of the same page size
    /// (adjacent ranges may together cover them). No check until memory is known.
    private func checkInsideMemory(_ frame: FrameType, start: UInt64, count: UInt64, pageSize: UInt64) throws(WireError) {
        guard memoryIsSet, count > 0 else { return }
        let end = start + count  // overflow already rejected by the parser
        var pfn = start
        while pfn < end {
            guard let range = announcedMemory.first(where: { pfn >= $0.startPFN && pfn - $0.startPFN < $0.pageCount }) else {
                throw .pfnOutsideMemory(frame: frame, startPFN: start, count: count)
            }
            guard UInt64(range.pageSize) == pageSize else {
                throw .pageSizeMismatch(frame: frame, pfn: pfn, declared: pageSize, announced: range.pageSize)
            }
            pfn = range.startPFN + range.pageCount
        }
    }
}
