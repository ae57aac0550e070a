import MigrationTLS
import VFIODevice

/// The source side of migrations: HELLO, pre-copy, stop-and-copy, commit.
/// Any failure before COMMIT puts the devices back to RUNNING. Each `run` is one
/// `SourceSession`; `cancel` may come from any thread.
public final class Sender: Sendable {
    private let devices: [SourceDevice]
    private let memory: GuestMemory?
    private let options: SenderOptions
    private let events: EventSink
    private let cancellation = Cancellation()
    /// Shared with the running session's writer, so a change reaches the wire at once.
    private let bandwidth: BandwidthLimiter
    /// Shared with the running session, read at each iteration boundary.
    private let runtime: RuntimeControl

    public init(devices: [SourceDevice], memory: GuestMemory?, options: SenderOptions, events: @escaping EventSink = { _ in }) {
        self.devices = devices; self.memory = memory; self.options = options
        bandwidth = BandwidthLimiter(bytesPerSecond: options.bandwidthBytesPerSecond)
        runtime = RuntimeControl(options)
        let logger = options.logger
        self.events = { event in logEvent(event, to: logger); events(event) }
    }

    /// Cancels before COMMIT (clean rollback); ignored once COMMIT is on its way.
    public func cancel() { cancellation.cancel() }

    /// Changes the wire limit, from any thread, also while a migration runs (the
    /// control socket's `set bandwidth`); nil = no limit. It applies from the next
    /// write on, and the convergence model uses it from the next iteration.
    public func setBandwidth(_ bytesPerSecond: UInt64?) {
        bandwidth.set(bytesPerSecond: bytesPerSecond == 0 ? nil : bytesPerSecond)
    }

    /// The wire limit in force; nil = none.
    public var bandwidthBytesPerSecond: UInt64? { bandwidth.bytesPerSecond }

    /// Changes the downtime target the convergence model decides on, from the next
    /// iteration boundary on. Refused once switch-over has begun.
    public func setDowntimeTarget(ms: Double) throws(ParameterChangeError) {
        guard ms.isFinite, ms > 0 else { throw .outOfRange(parameter: "downtime-ms", value: "\(ms)") }
        try runtime.update { $0.downtimeTargetMs = ms }
    }

    /// Changes the iteration bound, checked at the next iteration boundary (a bound
    /// already passed switches over there). Refused once switch-over has begun.
    public func setMaxIterations(_ count: Int) throws(ParameterChangeError) {
        guard count >= 1 else { throw .outOfRange(parameter: "max-iterations", value: "\(count)") }
        try runtime.update { $0.maxIterations = count }
    }

    /// Switch over at the next iteration boundary, whatever the estimate (the
    /// control socket's `switchover`). A no-op once switch-over has begun.
    public func requestSwitchover() {
        try? runtime.update { $0.switchoverRequested = true }
    }

    /// The live settings now (for `query`).
    public var runtimeParameters: RuntimeParameters { runtime.current }

    /// Runs the migration over an authenticated stream. With `reconnect` and a
    /// version-2 stream (ALPN, `SenderOptions.applicationProtocols`), a lost
    /// connection is replaced within `reconnectTimeoutSeconds` and the session resumes.
    public func run(stream: TLSStream, reconnect: Reconnect? = nil) throws(MigrationError) -> MigrationStats {
        let cancelledBeforeStart = cancellation.attach(stream)
        runtime.startSession()
        return try SourceSession(devices: devices, memory: memory, options: options, events: events, stream: stream, reconnect: reconnect,
                                 bandwidth: bandwidth, runtime: runtime, cancellation: cancellation, cancelledBeforeStart: cancelledBeforeStart).run()
    }
}
