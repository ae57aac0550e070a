import MigrationWire

/// A frame after a worker decoded it: payloads inflated and checked, ready for the
/// applier.
enum DecodedFrame: Sendable {
    case chunk(device: Int, phase: Phase, part: ChunkPart, bytes: [UInt8])
    case pages([PageWrite])
    case control(Frame)

    struct PageWrite: Sendable {
        var startPFN: UInt64
        var count: Int
        /// nil: zero pages.
        var bytes: [UInt8]?
    }

    init(_ frame: Frame, decompressor: PayloadDecompressor) throws(MigrationFailure) {
        do throws(WireError) {
            switch frame.body {
            case .deviceData(let d):
                self = .chunk(device: Int(frame.device), phase: d.phase, part: d.part, bytes: try decompressor.decode(d))
            case .pages(let p):
                var writes: [PageWrite] = []
                writes.reserveCapacity(p.segments.count)
                for s in p.segments {
                    let bytes = s.encoding == .zero ? nil : try decompressor.decode(s, pageSize: Int(p.pageSize))
                    writes.append(PageWrite(startPFN: s.startPFN, count: Int(s.pageCount), bytes: bytes))
                }
                self = .pages(writes)
            default:
                self = .control(frame)
            }
        } catch {
            throw MigrationFailure(error)
        }
    }
}
