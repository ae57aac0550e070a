/// What the pre-copy loop measured over one iteration: the convergence model's
/// only input. Byte counts are for this iteration alone, all devices together.
public struct IterationSample: Sendable, Equatable {
    /// Wall time of the iteration (device data, then dirty pages), seconds.
    public var durationSeconds: Double
    /// Bytes that left on the wire during the iteration (after compression, with framing).
    public var wireBytes: UInt64
    /// Payload bytes handed to the pipeline during the iteration, before compression.
    public var rawBytes: UInt64
    /// Device data read during the iteration.
    public var deviceBytesRead: UInt64
    /// Device data still pending after the iteration: v1 `pending_bytes`,
    /// v2 precopy `initial_bytes + dirty_bytes`.
    public var devicePendingBytes: UInt64
    /// The devices' own estimate of their stop-and-copy data when they give one
    /// (v2 `VFIO_DEVICE_FEATURE_MIG_DATA_SIZE`); nil = `devicePendingBytes`.
    public var deviceStopCopyBytes: UInt64?
    /// Guest pages the dirty log reported, and the iteration sent. On the full
    /// pass this is every page, which says nothing about dirtying.
    public var dirtyPages: UInt64
    public var pageSize: UInt64
    /// Seconds between the dirty-log read that found `dirtyPages` and the one
    /// before it (the pages were dirtied over that span, not over this iteration);
    /// nil = the previous iteration's duration (the log is read at the start of
    /// each page pass, after a short device pass).
    public var dirtyLogIntervalSeconds: Double?
    /// Raw bytes per wire byte in effect (above 1 when compression helps);
    /// nil = this iteration's `rawBytes / wireBytes`.
    public var compressionRatio: Double?
    /// The wire bandwidth limit in force for the next round, bytes/s; nil = none.
    /// Lets a limit lowered mid-migration take effect in the estimate at once.
    public var bandwidthLimit: UInt64?
    /// Raw bytes submitted to the pipeline but not yet on the wire when the
    /// iteration ended (at most the pipeline window): they go out inside the downtime.
    public var inFlightRawBytes: UInt64
    /// The first iteration, which sends every page.
    public var isFullPass: Bool

    public init(durationSeconds: Double, wireBytes: UInt64, rawBytes: UInt64,
                deviceBytesRead: UInt64, devicePendingBytes: UInt64, deviceStopCopyBytes: UInt64? = nil,
                dirtyPages: UInt64, pageSize: UInt64, dirtyLogIntervalSeconds: Double? = nil, compressionRatio: Double? = nil,
                bandwidthLimit: UInt64? = nil, inFlightRawBytes: UInt64 = 0, isFullPass: Bool = false) {
        self.durationSeconds = durationSeconds
        self.wireBytes = wireBytes
        self.rawBytes = rawBytes
        self.deviceBytesRead = deviceBytesRead
        self.devicePendingBytes = devicePendingBytes
        self.deviceStopCopyBytes = deviceStopCopyBytes
        self.dirtyPages = dirtyPages
        self.pageSize = pageSize
        self.dirtyLogIntervalSeconds = dirtyLogIntervalSeconds
        self.compressionRatio = compressionRatio
        self.bandwidthLimit = bandwidthLimit
        self.inFlightRawBytes = inFlightRawBytes
        self.isFullPass = isFullPass
    }

    /// What stop-and-copy must still move for the devices.
    var deviceRemainingBytes: UInt64 { max(devicePendingBytes, deviceStopCopyBytes ?? 0) }

    /// The guest pages of this round; without a throttle the final round dirties about as many.
    var dirtyPageBytes: UInt64 { dirtyPages &* pageSize }
}

/// The rates of one iteration, derived from its sample.
struct IterationRates: Sendable, Equatable {
    var seconds: Double
    var wireBytesPerSecond: Double
    /// The wire rate through the compression ratio: what the link moves in state bytes.
    var rawBytesPerSecond: Double
    /// Device state growth plus dirtied pages, per second; nil on the full pass
    /// (the dirty log was not read).
    var dirtyBytesPerSecond: Double?

    /// What the link could move in this iteration, in state bytes.
    var rawCapacityBytes: Double { rawBytesPerSecond * seconds }
    /// What was dirtied at this iteration's dirty rate over the same time.
    var dirtiedBytes: Double? { dirtyBytesPerSecond.map { $0 * seconds } }

    /// `previous`: the iteration before, nil for the first.
    init(_ sample: IterationSample, previous: PreviousIteration?, minimumSeconds: Double) {
        // A very short iteration would turn a few bytes into an absurd rate.
        seconds = max(sample.durationSeconds, minimumSeconds)
        var wireRate = Self.linkRate(sample, previous: previous, seconds: seconds, minimumSeconds: minimumSeconds)
        if let limit = sample.bandwidthLimit, limit > 0 { wireRate = min(wireRate, Double(limit)) }
        wireBytesPerSecond = wireRate
        let ratio = sample.compressionRatio
            ?? (sample.wireBytes > 0 ? Double(sample.rawBytes) / Double(sample.wireBytes) : previous?.compressionRatio ?? 1)
        // Floor of 1 B/s: the estimate stays finite (and JSON-encodable) on an idle link.
        rawBytesPerSecond = max(wireRate * ratio, 1)
        guard !sample.isFullPass else { dirtyBytesPerSecond = nil; return }
        // New device data = pending now + read - pending before. Without a previous
        // iteration, the budget read was what was pending at the start.
        let before = Double(previous?.devicePendingBytes ?? sample.deviceBytesRead)
        let growth = max(Double(sample.devicePendingBytes) + Double(sample.deviceBytesRead) - before, 0)
        let logSpan = max(sample.dirtyLogIntervalSeconds ?? previous?.seconds ?? seconds, minimumSeconds)
        dirtyBytesPerSecond = growth / seconds + Double(sample.dirtyPageBytes) / logSpan
    }

    /// Wire bytes per second the link showed. An iteration that moved nothing, or
    /// lasted less than the floor, measured an idle writer rather than the link
    /// (the pipeline had not started writing, or there was nothing to send): then
    /// the previous iteration's rate, or the bandwidth limit, stands for the link.
    /// Without either the floor of 1 B/s is all that is known.
    private static func linkRate(_ sample: IterationSample, previous: PreviousIteration?,
                                 seconds: Double, minimumSeconds: Double) -> Double {
        let measured = Double(sample.wireBytes) / seconds
        guard sample.wireBytes == 0 || sample.durationSeconds < minimumSeconds else { return measured }
        let known = previous?.wireBytesPerSecond ?? 0
        if known > 0 { return max(measured, known) }
        if sample.wireBytes == 0, let limit = sample.bandwidthLimit, limit > 0 { return Double(limit) }
        return measured
    }
}

/// What the rates of the next iteration need from the one before.
struct PreviousIteration: Sendable, Equatable {
    var devicePendingBytes: UInt64
    var seconds: Double
    /// The link as the previous iteration saw it, for an iteration too idle to measure it.
    var wireBytesPerSecond: Double
    var compressionRatio: Double
}
