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
    private let limits: WireLimits
    /// The source's lanes per stream (its HELLO, version 4); 0 before version 4.
    let lanes: Int

    init(limits: WireLimits, lanes: Int) {
        self.limits = limits
        self.lanes = lanes
    }

    /// `segment` decoded straight into `pages` (PayloadDecompressor's rules).
    func decode(_ segment: PageSegment, pageSize: Int, into pages: inout MutableSpan<UInt8>) throws(WireError) {
        try lock.withLock { () throws(WireError) in
            if decoder == nil { decoder = try PayloadDecompressor(limits: limits, lanes: lanes) }
            try decoder!.decode(segment, pageSize: pageSize, into: &pages)
        }
    }
}
