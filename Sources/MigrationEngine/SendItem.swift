import MigrationWire
import VFIODevice

/// What the source's producer hands to the compression workers.
enum SendItem: Sendable {
    case chunk(device: UInt32, phase: Phase, part: ChunkPart, bytes: [UInt8])
    /// Read and encode these guest pages in the worker.
    case pages(startPFN: UInt64, count: Int)
    case control(FrameBody, device: UInt32)

    /// The frames for this item, encoded on a worker thread with its own compressor.
    func encode(compressor: PayloadCompressor, encoding: SendEncoding, memory: GuestMemory?, counters: Counters) throws(MigrationFailure) -> SendOutput {
        switch self {
        case .chunk(let device, let phase, let part, let bytes):
            guard let length = UInt32(exactly: bytes.count) else {
                throw MigrationFailure(WireError.sizeNotRepresentable(what: "DEVICE_DATA piece", bytes: UInt64(bytes.count), limit: UInt64(UInt32.max)))
            }
            let encoded = try encoding.encodeBatch(compressor) { (choice) throws(WireError) in try compressor.encode(bytes, choice: choice) }
            let (used, payload) = encoded.value
            return SendOutput(frames: [(.deviceData(DeviceData(phase: phase, encoding: used, originalLength: length, payload: payload, part: part)), device)],
                              rawBytes: UInt64(bytes.count), coded: encoded.coded)
        case .pages(let start, let count):
            let memory = memory!
            let bytes = try deviceCall(nil) { () throws(DeviceError) in try memory.readPages(startPFN: start, count: count) }
            let encoded = try encoding.encodeBatch(compressor) { (choice) throws(WireError) in
                try compressor.encodePages(startPFN: start, pageSize: memory.pageSize, bytes: bytes, choice: choice)
            }
            var zero: UInt64 = 0
            for s in encoded.value where s.encoding == .zero { zero += UInt64(s.pageCount) }
            counters.addPages(UInt64(count), zero: zero)
            return SendOutput(frames: [(.pages(Pages(pageSize: UInt32(memory.pageSize), segments: encoded.value)), 0)],
                              rawBytes: UInt64(bytes.count), coded: encoded.coded)
        case .control(let body, let device):
            return SendOutput(frames: [(body, device)], rawBytes: 0)
        }
    }
}

/// A worker's result: frames for the writer, in order.
struct SendOutput: Sendable {
    var frames: [(FrameBody, UInt32)]
    /// The payload bytes (before compression) these frames carry, as counted in
    /// `Counters.produced`; 0 for control frames.
    var rawBytes: UInt64
    /// `auto` chose a codec level for this batch (what DeliveryArms measures).
    var coded = false
}
