/// Incremental decoder for one direction of a session: checks limits before
/// allocating, sequence contiguity, state rules (e.g. nothing after COMPLETE,
/// PFNs inside the announced memory once `memory` is set).
///
/// Everything the 24-byte header can be wrong about (magic, type, flags, payload
/// length, sequence, sender role, state, device index) is rejected as soon as the
/// header is buffered, before waiting for the payload. Errors are sticky: after one,
/// `next()` keeps throwing it, so a caller cannot resynchronise on garbage.
public struct FrameDecoder: Sendable {
    public static let headerSize: Int = FrameHeader.size

    /// The role of the side whose frames this decoder reads.
    public let peer: Role
    public let limits: WireLimits
    public private(set) var state: DecoderState = .awaitingHello

    private var buffer: [UInt8] = []
    private var readIndex = 0
    private var expectedSequence: UInt64 = 0
    private var pendingHeader: FrameHeader?
    private var failure: WireError?

    private var announcedMemory: [MemoryRange] = []
    private var memoryIsSet = false
    private var announcedDeviceCount: Int?
    private var peerEncodings: Set<Encoding> = [.raw]
    private var endedDevices: Set<UInt32> = []
    private var stopCopyDevices: Set<UInt32> = []
    /// A chunk sent in pieces whose continuations are still due (§5.2).
    private var openChunk: OpenChunk?

    private struct OpenChunk {
        var device: UInt32
        var phase: Phase
        var missing: UInt64
    }

    /// `peer` is the role of the side whose frames this decoder reads; frames that
    /// side may not send (e.g. READY from a source) are protocol errors.
    public init(peer: Role, limits: WireLimits = .default) {
        self.peer = peer
        self.limits = limits
    }

    /// Guest-memory ranges announced in HELLO; PAGES/DIRTY_BITMAP are checked against them.
    /// Decoding the peer's HELLO sets this unless the caller set it first.
    public var memory: [MemoryRange] {
        get { announcedMemory }
        set { announcedMemory = newValue; memoryIsSet = true }
    }

    /// Number of devices announced in HELLO; device indices are checked against it.
    /// Decoding the peer's HELLO sets this unless the caller set it first.
    public var deviceCount: Int? {
        get { announcedDeviceCount }
        set { announcedDeviceCount = newValue }
    }

    public mutating func feed(_ bytes: [UInt8]) {
        // Nothing pending: take the caller's array as the buffer (no copy of the
        // bulk of the stream when reads line up with frames).
        if readIndex == buffer.count {
            buffer = bytes
            readIndex = 0
            return
        }
        // Drop consumed bytes before growing, so the buffer holds at most one frame plus what was fed.
        if readIndex > 0 && readIndex >= buffer.count / 2 {
            buffer.removeFirst(readIndex)
            readIndex = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// The next whole frame, nil if more bytes are needed.
    public mutating func next() throws(WireError) -> Frame? {
        if let failure { throw failure }
        do {
            return try step()
        } catch {
            failure = error
            throw error
        }
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
            let header = try FrameHeader.parse(buffer, at: readIndex)
            throw WireError.truncatedPayload(frame: header.type, declared: header.payloadLength, buffered: buffered - FrameHeader.size)
        }
        throw WireError.truncatedHeader(bufferedBytes: buffered)
    }

    private mutating func step() throws(WireError) -> Frame? {
        let header: FrameHeader
        if let pending = pendingHeader {
            header = pending
        } else {
            guard bufferedByteCount >= FrameHeader.size else { return nil }
            header = try FrameHeader.parse(buffer, at: readIndex)
            try check(header)
            pendingHeader = header
        }
        let payloadStart = readIndex + FrameHeader.size
        guard buffer.count - payloadStart >= header.payloadLength else { return nil }

        var reader = ByteReader(buffer, range: payloadStart..<(payloadStart + header.payloadLength), frame: header.type)
        let body = try FrameBody.parsePayload(header.type, &reader, limits: limits)
        try apply(body, device: header.device)

        readIndex = payloadStart + header.payloadLength
        pendingHeader = nil
        expectedSequence += 1
        if readIndex == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            readIndex = 0
        }
        return Frame(device: header.device, sequence: header.sequence, body: body)
    }

    /// Header-only rules, in the order an operator would want them reported.
    private func check(_ h: FrameHeader) throws(WireError) {
        guard h.payloadLength <= limits.maxPayload else {
            throw .payloadTooLarge(frame: h.type, declared: h.payloadLength, limit: limits.maxPayload)
        }
        if h.sequence > expectedSequence { throw .sequenceGap(expected: expectedSequence, got: h.sequence) }
        if h.sequence < expectedSequence { throw .sequenceReplay(expected: expectedSequence, got: h.sequence) }
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
        switch (peer, state) {
        case (_, .awaitingHello): return type == .hello
        case (_, .aborted): return false
        case (.source, .established):
            return [.deviceData, .dirtyBitmap, .pages, .iterationEnd, .deviceEnd, .complete, .abort, .keepAlive].contains(type)
        case (.source, .complete): return [.commit, .abort, .keepAlive].contains(type)
        // ABORT after COMMIT cannot undo the commit; it only tells the destination why the source gives up.
        case (.source, .committed): return [.abort, .keepAlive].contains(type)
        case (.destination, .established): return [.ready, .abort, .keepAlive].contains(type)
        case (.destination, .ready): return [.resumed, .abort, .keepAlive].contains(type)
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
            peerEncodings = Set(hello.encodings).union([.raw])
            state = .established
        case .deviceData(let data):
            if data.encoding != .raw && !peerEncodings.contains(data.encoding) {
                throw .encodingNotAnnounced(frame: .deviceData, encoding: "\(data.encoding)")
            }
            try track(data, device: device)
            switch data.phase {
            case .precopy: if stopCopyDevices.contains(device) { throw .phaseRegression(device: device) }
            case .stopcopy: stopCopyDevices.insert(device)
            }
        case .dirtyBitmap(let bitmap):
            try checkInsideMemory(.dirtyBitmap, start: bitmap.startPFN, count: bitmap.totalPFNs, pageSize: bitmap.pageSize)
        case .pages(let pages):
            for segment in pages.segments {
                if segment.encoding == .deflate && !peerEncodings.contains(.deflate) {
                    throw .encodingNotAnnounced(frame: .pages, encoding: "deflate")
                }
                try checkInsideMemory(.pages, start: segment.startPFN, count: UInt64(segment.pageCount), pageSize: UInt64(pages.pageSize))
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
