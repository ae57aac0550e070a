import MigrationWire
import SyncPrimitives
import VFIODevice

/// The destination's pipeline for one connection (stream 0's and each extra
/// stream's): device data inflated on `workers` threads, each with its own
/// decompressor (PAGES pass through, `submit(passthrough:)`), everything applied in
/// the stream's order by one `Applier` on the consumer thread.
enum ReceivePipeline {
    typealias Pipeline = OrderedPipeline<Frame, DecodedFrame, MigrationFailure>

    static func make(name: String, workers: Int, limits: WireLimits, devices: [DestinationDevice], memory: GuestMemory?,
                     writer: FrameWriter, pageDecoder: PageDecoderSlot, events: @escaping EventSink, progress: LockedValue<ApplyProgress>,
                     state: LockedValue<DestinationSession.State>, digest: DeviceDigestAlgorithm) -> Pipeline {
        Pipeline(
            name: name, workers: workers, window: workers * 4 + 4,
            makeTransform: { () throws(MigrationFailure) -> Pipeline.Transform in
                let decompressor: PayloadDecompressor
                do throws(WireError) { decompressor = try PayloadDecompressor(limits: limits) } catch { throw MigrationFailure(error) }
                return { (frame: Frame) throws(MigrationFailure) -> DecodedFrame in try DecodedFrame(frame, decompressor: decompressor) }
            },
            makeConsumer: {
                let applier = Applier(devices: devices, memory: memory, writer: writer, pageDecoder: pageDecoder, events: events,
                                      progress: progress, state: state, digest: digest)
                return { (item: DecodedFrame) throws(MigrationFailure) in try applier.apply(item) }
            })
    }
}
