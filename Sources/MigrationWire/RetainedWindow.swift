/// The source's retained window (docs/PROTOCOL.md §13.3, §13.7): every frame sent
/// and not yet acknowledged, in the form the replay needs. Pure bookkeeping, no
/// I/O: the engine records each frame as it writes it, frees on ACK, asks for the
/// replay after RESUME_ACCEPT, and stops reading devices while `hasRoom` is false.
///
/// DEVICE_DATA and every other frame are kept as their encoded bytes and replayed
/// byte for byte (a driver hands its data out once); PAGES keep only their page
/// runs (the pages are read again) and KEEPALIVE nothing. Those two are charged their
/// bookkeeping (`entryCost`, `pageRunCost`), so a window of them is bounded too.
/// A PAGES frame with a zstd lane segment (§15) is kept as its bytes, charged their
/// size: its segments continue the lane's stream as the destination decoded it up to
/// there, which pages compressed again would not.
public struct RetainedWindow: Sendable {
    /// Bytes of retained frames the window may hold (the reference: 64 MiB).
    public let capacity: Int
    /// Encoded bytes kept, plus the bookkeeping PAGES and KEEPALIVE entries are charged.
    public private(set) var retainedBytes = 0
    /// The oldest sequence the window can replay: everything below was acknowledged.
    public private(set) var firstSequence: UInt64
    /// The next sequence the source will send.
    public private(set) var nextSequence: UInt64
    /// Per device: decoded DEVICE_DATA bytes of the acknowledged frames (below `firstSequence`).
    public private(set) var acknowledgedDeviceBytes: [UInt64]

    /// entries[head + i] is sequence firstSequence + i; the acknowledged ones before
    /// `head` are cut off in batches, so an ACK costs what it frees, not the window's size.
    private var entries: [Entry] = []
    private var head = 0
    private var live: ArraySlice<Entry> { entries[head...] }

    /// A page run of a PAGES frame, to read again on replay.
    public struct PageRun: Sendable, Equatable {
        public var startPFN: UInt64
        public var pageCount: UInt32
    }

    /// What the replay sends for one sequence number, in order.
    public enum ReplayItem: Sendable, Equatable {
        /// The frame's original bytes.
        case retained([UInt8])
        /// A PAGES frame to build again at `sequence` from a fresh read of these runs
        /// (`FrameEncoder.regenerated`).
        case pages(sequence: UInt64, pageSize: UInt32, runs: [PageRun])
        /// A KEEPALIVE at `sequence`.
        case keepAlive(sequence: UInt64)
    }

    private enum Entry: Sendable {
        case bytes([UInt8], device: UInt32?, dataBytes: UInt64)
        case pages(pageSize: UInt32, runs: [PageRun])
        case keepAlive
    }

    /// What a retained PAGES or KEEPALIVE frame is charged: its entry, and per page run
    /// its start and count (about what they take in memory).
    public static let entryCost = 32
    public static let pageRunCost = 16

    /// The smallest window that always makes room again: the largest frame plus the
    /// bytes after which the destination must acknowledge.
    public static func minimumCapacity(largestFrame: Int) -> Int { largestFrame + ackByteInterval }
    /// §13.3: the destination acknowledges at least every 1 MiB of frames received.
    public static let ackByteInterval = 1 << 20
    /// §13.3: and at most 250 ms after a frame not covered by its last ACK.
    public static let ackDelayMilliseconds = 250

    /// `nextSequence`: the first sequence to retain (1: HELLO, sequence 0, is never
    /// replayed — a destination that did not take it holds no session).
    public init(capacity: Int, deviceCount: Int, nextSequence: UInt64 = 1) {
        self.capacity = capacity
        self.firstSequence = nextSequence
        self.nextSequence = nextSequence
        self.acknowledgedDeviceBytes = [UInt64](repeating: 0, count: deviceCount)
    }

    /// Whether a frame of `byteCount` encoded bytes that must be retained fits now.
    /// An empty window always takes one frame, so a frame larger than the capacity
    /// cannot stall the session for ever.
    public func hasRoom(for byteCount: Int) -> Bool { retainedBytes == 0 || retainedBytes + byteCount <= capacity }

    /// Records a frame just sent, `encoded` being its bytes on the wire (header included).
    public mutating func record(_ body: FrameBody, device: UInt32 = 0, encoded: [UInt8]) {
        precondition(encoded.count >= FrameHeader.size && loadLE64(encoded, at: 16) == nextSequence,
                     "frames are recorded in the order they are numbered")
        let entry: Entry = switch body {
        case .pages(let p) where p.hasLaneSegments: .bytes(encoded, device: nil, dataBytes: 0)
        case .pages(let p): .pages(pageSize: p.pageSize, runs: p.segments.map { PageRun(startPFN: $0.startPFN, pageCount: $0.pageCount) })
        case .keepAlive: .keepAlive
        case .deviceData(let d): .bytes(encoded, device: device, dataBytes: UInt64(d.originalLength))
        default: .bytes(encoded, device: nil, dataBytes: 0)
        }
        append(entry)
    }

    private mutating func append(_ entry: Entry) {
        entries.append(entry)
        retainedBytes += Self.cost(of: entry)
        nextSequence += 1
    }

    /// Frame bytes the window's storage still references, acknowledged slots included:
    /// what it costs in memory (tests check acknowledged frames are freed at once).
    var storedBytes: Int {
        entries.reduce(0) { sum, entry in if case .bytes(let b, _, _) = entry { sum + b.count } else { sum } }
    }

    private static func cost(of entry: Entry) -> Int {
        switch entry {
        case .bytes(let bytes, _, _): bytes.count
        case .pages(_, let runs): entryCost + pageRunCost * runs.count
        case .keepAlive: entryCost
        }
    }

    /// Records a frame that is not a `FrameBody` (version 3: STREAM_END), kept as its
    /// bytes and replayed as they are.
    public mutating func record(encoded: [UInt8]) {
        precondition(encoded.count >= FrameHeader.size && loadLE64(encoded, at: 16) == nextSequence,
                     "frames are recorded in the order they are numbered")
        append(.bytes(encoded, device: nil, dataBytes: 0))
    }

    /// An ACK (or READY's implied position): checks it against what was sent and
    /// frees every frame below it.
    public mutating func acknowledge(_ position: StreamPosition, frame: FrameType = .ack) throws(WireError) {
        try check(position, frame: frame)
        drop(below: position.nextSequence)
    }

    /// After RESUME_ACCEPT: what to send again, from the resume point to the last
    /// frame sent. Frees what the destination already has. A resume point outside
    /// the window, or device bytes the source did not send, cannot be resumed: the
    /// caller ends the session with ABORT `protocolError` naming the error.
    public mutating func replay(from position: StreamPosition) throws(WireError) -> [ReplayItem] {
        try check(position, frame: .resumeAccept)
        drop(below: position.nextSequence)
        return live.enumerated().map { i, entry in
            let sequence = firstSequence + UInt64(i)
            switch entry {
            case .bytes(let bytes, _, _): return .retained(bytes)
            case .pages(let pageSize, let runs): return .pages(sequence: sequence, pageSize: pageSize, runs: runs)
            case .keepAlive: return .keepAlive(sequence: sequence)
            }
        }
    }

    /// §13.3: R within what was sent and still retained, and per device exactly the
    /// bytes the frames below R carried.
    private func check(_ p: StreamPosition, frame: FrameType) throws(WireError) {
        guard p.nextSequence >= firstSequence, p.nextSequence <= nextSequence else {
            throw .resumePointOutsideWindow(frame: frame, resumePoint: p.nextSequence, oldest: firstSequence, next: nextSequence)
        }
        guard p.deviceBytes.count == acknowledgedDeviceBytes.count else {
            throw .positionDeviceCount(frame: frame, declared: p.deviceBytes.count, announced: acknowledgedDeviceBytes.count)
        }
        var sent = acknowledgedDeviceBytes
        for entry in live.prefix(Int(p.nextSequence - firstSequence)) {
            if case .bytes(_, let device?, let n) = entry, Int(device) < sent.count { sent[Int(device)] += n }
        }
        for (i, (reported, actual)) in zip(p.deviceBytes, sent).enumerated() where reported != actual {
            throw .positionMismatch(frame: frame, device: UInt32(i), reported: reported, sent: actual)
        }
    }

    private mutating func drop(below sequence: UInt64) {
        let count = Int(sequence - firstSequence)
        for i in head..<(head + count) {
            let entry = entries[i]
            retainedBytes -= Self.cost(of: entry)
            if case .bytes(_, let device?, let n) = entry, Int(device) < acknowledgedDeviceBytes.count { acknowledgedDeviceBytes[Int(device)] += n }
            // Free the frame's bytes now; only the slot waits for the batched cut below
            // (up to 1024 acknowledged DEVICE_DATA frames of 1 MiB held the source at
            // 280 MiB RssAnon in the benchmark).
            entries[i] = .keepAlive
        }
        head += count
        firstSequence = sequence
        // Cut the freed entries off once they are at least half the array: amortised O(1) each.
        if head >= 1024 && head * 2 >= entries.count {
            entries.removeFirst(head)
            head = 0
        }
    }
}
