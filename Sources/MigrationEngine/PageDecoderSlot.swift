import MigrationWire
import SyncPrimitives

/// One stream's page decoder for the whole session. Its zstd lanes (PROTOCOL.md §15.3)
/// continue across a resume, while the pipeline that applies the stream's pages, and
/// its consumer thread, is made again for each connection: the slot outlives them and
/// hands the decoder to whichever applier runs now (one at a time: a lost connection's
/// pipeline is drained before the next one starts). Made at the first PAGES.
final class PageDecoderSlot: @unchecked Sendable {  // owns the decoder's C state (zlib, zstd), used only under `lock`
    private let lock = Lock()
    private var decoder: PayloadDecompressor?
    /// The lanes this stream has started, each admitted by the session's budget.
    private var started: Set<UInt8> = []
    private let limits: WireLimits
    private let budget: SessionLanes

    /// The source's lanes for the session (its HELLO, version 4); 0 before version 4.
    var lanes: Int { budget.limit }

    init(limits: WireLimits, budget: SessionLanes) {
        self.limits = limits
        self.budget = budget
    }

    /// `segment` decoded straight into `pages` (PayloadDecompressor's rules); a lane
    /// this stream starts must fit in the session's (§15.2).
    func decode(_ segment: PageSegment, pageSize: Int, into pages: inout MutableSpan<UInt8>) throws(WireError) {
        try lock.withLock { () throws(WireError) in
            if segment.encoding == .zstdLane, !started.contains(segment.lane) {
                try budget.admit(lane: segment.lane)
                started.insert(segment.lane)
            }
            if decoder == nil { decoder = try PayloadDecompressor(limits: limits, lanes: budget.limit) }
            try decoder!.decode(segment, pageSize: pageSize, into: &pages)
        }
    }
}

/// The zstd lanes of a session over all its streams (§15.2): each (stream, lane) the
/// source starts takes one of the HELLO's L, so the destination's lane memory stays at
/// most L windows however many streams the session has.
final class SessionLanes: Sendable {
    let limit: Int
    private let used = LockedValue(0)

    init(limit: Int) { self.limit = limit }

    func admit(lane: UInt8) throws(WireError) {
        let admitted = used.withLock { n in
            guard n < limit else { return false }
            n += 1
            return true
        }
        guard admitted else { throw WireError.lanesExhausted(frame: .pages, lane: lane, lanes: limit) }
    }
}
