import Foundation
import Logging
import MigrationWire

public enum TimeoutAction: String, Sendable, Codable, CaseIterable {
    /// Cancel and roll back: the source keeps running.
    case rollback
    /// Stop iterating and switch over now, whatever the downtime.
    case switchover
}

public struct SenderOptions: Sendable {
    public var compression: CompressionPolicy = .auto
    public var downtimeTargetMs: Double = 300
    public var maxIterations: Int = 30
    /// Pre-copy time budget; nil = none.
    public var timeoutSeconds: Double?
    public var onTimeout: TimeoutAction = .rollback
    /// The wire limit at the start; `Sender.setBandwidth` changes it while the migration runs.
    public var bandwidthBytesPerSecond: UInt64?
    /// K: pre-copy iterations in a row without a meaningful shrink of the remaining
    /// set before it counts as stalled (`--max-stalled-iterations`).
    public var maxStalledIterations: Int = 3
    /// What to do when pre-copy stalls or diverges (`--on-stall`).
    public var onStall: StallPolicy = .switchover
    /// The VMM's handle for `--on-stall throttle`; nil = none attached (then
    /// `throttle` acts as `switchover`).
    public var guestThrottle: (any GuestThrottle)?
    /// The VMM's stop/resume handshake around stop-and-copy; nil = none (the
    /// guest is not paused by the transport: today's behaviour).
    public var guestControl: (any GuestControl)?
    /// `--dirty vmm`: the guest's own dirty pages, re-sent with the devices' (the
    /// union); nil = only the devices' sources.
    public var guestDirtyLog: (any GuestDirtyLog)?
    public var workers: Int = max(ProcessInfo.processInfo.activeProcessorCount, 1)
    /// A peer silent for this long (no frame, no keep-alive) is gone.
    public var peerTimeoutSeconds: Double = 30
    public var limits: WireLimits = .default
    /// Guest pages per PAGES frame.
    public var pagesPerFrame: Int = 256
    /// Device data per DEVICE_DATA frame: a larger chunk is read from the region and
    /// sent in pieces of this size (PROTOCOL.md §5.2), so memory stays bounded by the
    /// pipeline window whatever the driver stages. Capped by `limits`.
    public var devicePieceBytes: Int = 1 << 20
    /// After COMPLETE, how long the destination may take to apply, verify and
    /// answer READY (keep-alives alone do not extend it).
    public var readyTimeoutSeconds: Double = 120
    /// `--reconnect-timeout`: how long a broken connection may take to come back
    /// (PROTOCOL.md §13); 0 = version 1 only, a broken connection fails as before.
    public var reconnectTimeoutSeconds: Double = 30
    /// `--resume-window`: bytes of sent, unacknowledged frames kept for a replay.
    public var resumeWindowBytes: Int = 64 << 20
    /// `--streams`: TLS connections the session may use (PROTOCOL.md §14); the
    /// destination's `--max-streams` caps it. 1 = the single-stream protocol of before.
    /// Default (library and CLI): `StreamCount.defaultStreams`, by the host's cores.
    public var streams: Int = StreamCount.defaultStreams
    /// `--device-digest`: `.xxh3` offers version 5 and uses XXH3-128 for DEVICE_END
    /// when the destination lists it (PROTOCOL.md §16); `.sha256` always SHA-256.
    public var deviceDigest: DeviceDigestAlgorithm = .xxh3
    /// `--no-page-copies` clears it: with it, a resuming source offers version 6 and
    /// sends a page the destination already holds (same bytes at another PFN of its
    /// stream) as a 28-byte copy segment (PROTOCOL.md §17). The table that remembers
    /// what was sent takes up to 20 MiB.
    public var pageCopies = true
    /// Diagnostics (phases at info, iterations at debug, frames at trace).
    public var logger = Logger(label: "vfio-migrate.source")
    public init() {}

    /// The convergence model's knobs from these options; throws when one is out of range.
    func convergenceParameters() throws(MigrationFailure) -> ConvergenceParameters {
        var p = ConvergenceParameters()
        p.downtimeTargetMs = downtimeTargetMs
        p.maxStalledIterations = maxStalledIterations
        do { try p.validate() } catch { throw .configuration("convergence parameter out of range: \(error)") }
        return p
    }

    /// The piece size actually used: the option, within what the receiver's limits
    /// accept in one frame (raw data after the 16-byte `first` prefix; deflate
    /// output is never larger, the compressor sends raw when it does not pay).
    var effectivePieceBytes: Int {
        max(1, min(devicePieceBytes, limits.maxInflated, limits.maxPayload - 16))
    }
}


/// The VMM's control over the guest's vCPUs (the control socket's `throttle`
/// request), for `--on-stall throttle`: slowing the guest slows its dirtying.
public protocol GuestThrottle: Sendable {
    /// Slow the guest to `percent` % of its CPU time taken away (0 = not throttled).
    func throttleGuest(percent: Int) throws
}

/// The VMM's control over the guest's vCPUs at the edges of a migration (the
/// control socket's `stop-guest`/`resume-guest`/`start-guest` requests). The
/// transport owns the devices; the VMM owns the vCPUs: without this handshake a
/// source would copy the last dirty pages of a guest that is still writing them.
public protocol GuestControl: Sendable {
    /// Source, before the final dirty round and stop-and-copy: returns once the
    /// vCPUs are paused. Throws when the VMM refuses or does not answer in time;
    /// the source then rolls back rather than copy a running guest.
    func stopGuest() throws
    /// Source, after a failure before COMMIT (the devices are RUNNING again).
    /// Best effort: the VMM's answer is not awaited.
    func resumeGuest()
    /// Destination, after COMMIT and the devices are RUNNING.
    func startGuest()
}
