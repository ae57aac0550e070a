import MigrationWire
import VFIODevice

/// A batch of pages in a session with page copies (§17), and its generation in the
/// stream's `PageCopyTable`.
struct PageCopyBatch {
    var startPFN: UInt64
    var count: Int
    var generation: UInt64
}

/// One send worker's side of page copies: the batch is read once into a buffer of the
/// worker's, and fingerprints, zero checks, codecs and raw bytes all come from that one
/// read, so what the table will remember is exactly what the frame carries (a page the
/// guest writes meanwhile is in the dirty log and sent again).
final class PageCopyWorker {
    let table: PageCopyTable
    private var buffer: [UInt8] = []

    init(table: PageCopyTable) { self.table = table }

    func encode(_ batch: PageCopyBatch, compressor: PayloadCompressor, encoding: SendEncoding, memory: GuestMemory, counters: Counters,
                lane: ZstdLane?) throws(MigrationFailure) -> SendOutput {
        // Moved out and back: a span of it must not overlap an access to `self` (the capacity is kept).
        var read: [UInt8] = []
        swap(&read, &buffer)
        defer { swap(&read, &buffer) }
        try deviceCall(nil) { () throws(DeviceError) in try memory.readPages(startPFN: batch.startPFN, count: batch.count, into: &read) }
        let (table, pageSize) = (self.table, memory.pageSize)
        let encoded = try encoding.encodeBatch(compressor) { (choice) throws(WireError) -> (PreparedFrame, [SentPage]) in
            // A last check against a fingerprint collision: the page named holds the same
            // bytes in the guest now (one written since it was sent fails it; no copy then).
            var copies = PageCopies(fingerprinter: table.fingerprinter, find: table.find) { source, page in
                (try? memory.pagesEqual(source, count: 1, page)) ?? false
            }
            var frame = PagesFrameBuilder(pageSize: pageSize, pageCount: batch.count)
            try compressor.encodePages(startPFN: batch.startPFN, pageSize: pageSize, stablePages: read.span.bytes, choice: choice,
                                       into: &frame, lane: lane, copies: &copies)
            return (try frame.finish(), copies.sent)
        }
        let (frame, sent) = encoded.value
        counters.addPages(frame)
        var output = SendOutput(frame: frame, rawBytes: UInt64(batch.count * pageSize), coded: encoded.coded)
        output.sentPages = (batch.generation, sent)
        return output
    }

}

@available(*, unavailable, message: "a PageCopyWorker belongs to one send worker")
extension PageCopyWorker: Sendable {}
