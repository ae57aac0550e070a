/// What one pre-copy pass left behind, as the loop measured it.
struct PrecopyPass: Sendable {
    /// Device data still pending after the pass, all devices.
    var pending: UInt64
    var dirtyPages: UInt64
    /// Device data read in the pass, all devices.
    var deviceBytesRead: UInt64
    /// When the pass read the dirty log; nil on the full pass (it does not).
    var dirtyLogReadAt: ContinuousClock.Instant?
}

/// The byte counters at one instant: what the pipeline took in, what the writer
/// put out (before and after compression).
struct TransferMark: Sendable {
    var produced: UInt64
    var rawWritten: UInt64
    var wireBytes: UInt64
    var at = ContinuousClock.now

    /// Submitted but not yet written: it leaves inside the downtime.
    var inFlight: UInt64 { produced > rawWritten ? produced - rawWritten : 0 }
}

/// The pre-copy loop's side of the convergence model: marks the iteration
/// boundaries, makes one `IterationSample` per iteration, and turns the verdict
/// into an action under `--on-stall`. The model stays pure; the clock and the
/// counters are read here.
struct PrecopyConvergence: Sendable {
    private var model: ConvergenceModel
    private(set) var policy: ConvergencePolicy
    private var iterationStart: TransferMark
    /// The previous dirty-log read; before the first, when logging started.
    private var previousLogRead: ContinuousClock.Instant

    /// `loggingSince`: when the devices started dirty logging (SAVING|RUNNING).
    init(parameters: ConvergenceParameters, policy: ConvergencePolicy, start: TransferMark, loggingSince: ContinuousClock.Instant) {
        model = ConvergenceModel(parameters: parameters)
        self.policy = policy
        iterationStart = start
        previousLogRead = loggingSince
    }

    /// The figures of the last iteration recorded.
    var latest: ConvergenceFigures? { model.latest }

    /// A downtime target `set` while pre-copy runs: the next verdict uses it.
    mutating func setDowntimeTarget(ms: Double) { model.setDowntimeTarget(ms: ms) }

    mutating func beginIteration(_ mark: TransferMark) { iterationStart = mark }

    /// Records the iteration that just ended; returns its figures and what to do next.
    mutating func endIteration(_ pass: PrecopyPass, isFullPass: Bool, end: TransferMark,
                               pageSize: UInt64, bandwidthLimit: UInt64?) -> (ConvergenceFigures, ConvergenceAction) {
        var logInterval: Double?
        if let read = pass.dirtyLogReadAt {
            logInterval = (read - previousLogRead).seconds
            previousLogRead = read
        }
        let sample = IterationSample(
            durationSeconds: (end.at - iterationStart.at).seconds,
            wireBytes: end.wireBytes - iterationStart.wireBytes,
            // Writer-side raw bytes, so raw/wire is the compression of what actually
            // went out (`auto`'s choices included), not skewed by the pipeline's fill.
            rawBytes: end.rawWritten - iterationStart.rawWritten,
            deviceBytesRead: pass.deviceBytesRead, devicePendingBytes: pass.pending,
            dirtyPages: pass.dirtyPages, pageSize: pageSize, dirtyLogIntervalSeconds: logInterval,
            bandwidthLimit: bandwidthLimit, inFlightRawBytes: end.inFlight, isFullPass: isFullPass)
        let figures = model.record(sample)
        return (figures, policy.action(for: figures))
    }
}
