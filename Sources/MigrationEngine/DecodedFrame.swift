import MigrationWire

/// A frame after a worker decoded it, ready for the applier: device chunks
/// inflated and checked; pages still as their segments, which the applier decodes
/// straight into guest memory (raw ones copied once from the receive buffer).
enum DecodedFrame: Sendable {
    case chunk(device: Int, phase: Phase, part: ChunkPart, bytes: [UInt8])
    case pages(Pages)
    case control(Frame)

    init(_ frame: Frame, decompressor: PayloadDecompressor) throws(MigrationFailure) {
        do throws(WireError) {
            switch frame.body {
            case .deviceData(let d):
                self = .chunk(device: Int(frame.device), phase: d.phase, part: d.part, bytes: try decompressor.decode(d))
            case .pages(let p):
                // Decoded where it is applied: into the pages themselves, in stream order.
                self = .pages(p)
            default:
                self = .control(frame)
            }
        } catch {
            throw MigrationFailure(error)
        }
    }
}
