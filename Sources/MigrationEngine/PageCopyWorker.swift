import MigrationWire
import VFIODevice

/// A batch of pages in a session with page copies (§17), and its generation in the
/// stream's `PageCopyTable`.
struct PageCopyBatch {
    var startPFN: UInt64
    var count: Int
    var generation: UInt64
}

/// One send worker's side of page copies: the batch is encoded from the guest mapping
/// as without copies, and what the table will remember is fingerprinted where the
/// bytes sent are fixed (PayloadCompressor.encodePages(…copies:)); a page the guest
/// writes meanwhile is in the dirty log and sent again.
final class PageCopyWorker {
    let table: PageCopyTable

    init(table: PageCopyTable) { self.table = table }

    func encode(_ batch: PageCopyBatch, compressor: PayloadCompressor, encoding: SendEncoding, memory: GuestMemory, counters: Counters,
                lane: ZstdLane?) throws(MigrationFailure) -> SendOutput {
        let (table, pageSize) = (self.table, memory.pageSize)
        let built = try deviceCall(nil) { () throws(DeviceError) in
            try memory.withPages(startPFN: batch.startPFN, count: batch.count) { (pages: RawSpan) throws(MigrationFailure) in
                try encoding.encodeBatch(compressor) { (choice) throws(WireError) -> (PreparedFrame, [SentPage]) in
                    // A last check against a fingerprint collision: the page named holds the same
                    // bytes in the guest now (one written since it was sent fails it; no copy then).
                    var copies = PageCopies(fingerprinter: table.fingerprinter, mayHold: table.mayHold, find: table.find) { source, page in
                        (try? memory.pagesEqual(source, count: 1, page)) ?? false
                    }
                    // Raw pages may stay in the mapping for the writer, as without copies.
                    var frame = PagesFrameBuilder(pageSize: pageSize, pageCount: batch.count, borrowingRawPages: true)
                    try compressor.encodePages(startPFN: batch.startPFN, pageSize: pageSize, pages: pages, choice: choice,
                                               into: &frame, lane: lane, copies: &copies)
                    return (try frame.finish(), copies.sent)
                }
            }
        }
        let encoded = try built.get()
        let (frame, sent) = encoded.value
        counters.addPages(frame)
        var output = SendOutput(frame: frame, rawBytes: UInt64(batch.count * pageSize), coded: encoded.coded)
        output.sentPages = (batch.generation, sent)
        return output
    }
}

@available(*, unavailable, message: "a PageCopyWorker belongs to one send worker")
extension PageCopyWorker: Sendable {}
