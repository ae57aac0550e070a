import Logging
import MigrationTLS
import MigrationWire

/// Progress and lifecycle events, for a TTY display or one JSON object per line.
public enum MigrationEvent: Sendable {
    case connected(peer: String)
    /// HELLO exchanged and compatible; `security` carries what deserves a warning
    /// (development certificates, a certificate that expires soon); `streams` is the
    /// TLS streams the session uses (PROTOCOL.md §14; 1 before version 3).
    case helloAccepted(devices: [String], memoryBytes: UInt64, security: SessionSecurity, streams: Int, zstdLanes: Int = 0,
                       deviceDigest: DeviceDigestAlgorithm)
    case phase(MigrationPhase)
    case progress(Progress)
    /// One pre-copy iteration done: what is left, and the convergence model's figures
    /// (dirty rate vs transfer rate, projection, verdict) behind the estimate.
    case iterationEnd(iteration: Int, pendingBytes: UInt64, dirtyPages: UInt64, estimatedDowntimeMs: Double,
                      convergence: ConvergenceFigures)
    case switchover(reason: String)
    case deviceEnd(device: String, bytes: UInt64, chunks: UInt64)
    case sessionRefused(String)
    case finished(MigrationStats)
    /// Version 2 (PROTOCOL.md §13): the connection broke and the session is kept;
    /// `reason` is how it broke.
    case connectionLost(reason: String)
    /// Source: the `attempt`-th reconnection, `elapsedSeconds` after the loss.
    case reconnecting(attempt: Int, elapsedSeconds: Double)
    /// The session continues on a new connection from the source's frame
    /// `fromSequence`; `bytesReplayed` were sent again (the source's count).
    case resumed(fromSequence: UInt64, bytesReplayed: UInt64)
}

public struct Progress: Sendable, Codable {
    public var phase: MigrationPhase
    public var iteration: Int
    public var rawBytes: UInt64
    public var wireBytes: UInt64
    public var bytesPerSecond: Double
    public var pendingBytes: UInt64
    public var dirtyPages: UInt64
    public var etaSeconds: Double?
    /// Pre-copy: the convergence figures of the iteration that just ended.
    public var convergence: ConvergenceFigures?
    /// `auto`: the latest per-batch choice (raw or a codec level) and why.
    public var encoding: EncodingReport?
    /// Version 2 with resumption: the connection and the outage so far.
    public var link: LinkFigures?
}

public struct DeviceStats: Sendable, Codable {
    public var name: String
    public var bytes: UInt64 = 0
    public var chunks: UInt64 = 0
    public var precopyBytes: UInt64 = 0
    public var stopcopyBytes: UInt64 = 0
    /// DEVICE_END's digest in hex, and which it is (`sha256`, `xxh3-128`; §16).
    public var digest: String = ""
    public var digestAlgorithm: String = ""
    /// The digest again when it is SHA-256 (empty otherwise), as before version 5.
    public var sha256: String = ""
    public init(name: String) { self.name = name }

    mutating func record(digest field: [UInt8], _ algorithm: DeviceDigestAlgorithm) {
        digest = hex(field)
        digestAlgorithm = algorithm.description
        sha256 = algorithm == .sha256 ? digest : ""
    }
}

public struct MigrationStats: Sendable, Codable {
    public var role: String
    public var totalSeconds: Double = 0
    /// Source: from the devices stopping (SAVING) to RESUMED. Destination: from the first stop-and-copy frame to RUNNING.
    public var downtimeMs: Double = 0
    public var iterations: Int = 0
    public var converged: Bool = true
    /// Source: the estimate that ended pre-copy next to the measured downtime.
    public var downtimeComparison: DowntimeComparison?
    public var rawBytes: UInt64 = 0
    public var wireBytes: UInt64 = 0
    public var pagesSent: UInt64 = 0
    public var zeroPages: UInt64 = 0
    /// Pages sent (source) or applied (destination) as copies of pages the destination
    /// already held (protocol version 6, PROTOCOL.md §17).
    public var copiedPages: UInt64 = 0
    public var deviceBytes: UInt64 = 0
    /// Dirty-bitmap answers by kind (source side): NONE, ALL, partial bitmaps.
    public var bitmapsNone: Int = 0
    public var bitmapsAll: Int = 0
    public var bitmapsPartial: Int = 0
    public var devices: [DeviceStats] = []
    public init(role: String) { self.role = role }
}

public typealias EventSink = @Sendable (MigrationEvent) -> Void

/// Mirrors events into the diagnostics log.
func logEvent(_ event: MigrationEvent, to logger: Logger) {
    switch event {
    case .phase(let p): logger.info("phase \(p)")
    case .helloAccepted(let d, let m, let security, let streams, let lanes, let digest):
        logger.info("HELLO accepted", metadata: ["devices": "\(d)", "memory_bytes": "\(m)", "streams": "\(streams)", "zstd_lanes": "\(lanes)",
                                                 "device_digest": "\(digest)"])
        // notice, not warning: the CLI prints these itself (at start, and in the hello event).
        for warning in security.warnings() { logger.notice("\(warning)") }
    case .iterationEnd(let i, let p, let d, let e, let c):
        logger.debug("iteration end", metadata: ["iteration": "\(i)", "pending": "\(p)", "dirty_pages": "\(d)", "estimated_downtime_ms": "\(Int(e))",
                                                 "verdict": "\(c.verdict)", "reason": "\(c.reason)"])
    case .switchover(let r): logger.info("switch-over: \(r)")
    case .deviceEnd(let d, let b, let c): logger.info("device end", metadata: ["device": "\(d)", "bytes": "\(b)", "chunks": "\(c)"])
    case .progress(let p): logger.trace("progress", metadata: ["raw": "\(p.rawBytes)", "wire": "\(p.wireBytes)"])
    case .connected(let peer): logger.info("connected to \(peer)")
    case .sessionRefused(let why): logger.warning("refused a peer: \(why)")
    case .connectionLost(let why): logger.warning("connection lost, session kept: \(why)")
    case .reconnecting(let n, let s): logger.notice("reconnecting", metadata: ["attempt": "\(n)", "elapsed_s": "\(s)"])
    case .resumed(let r, let b): logger.notice("session resumed", metadata: ["from_sequence": "\(r)", "bytes_replayed": "\(b)"])
    case .finished(let s): logger.info("finished", metadata: ["seconds": "\(s.totalSeconds)", "downtime_ms": "\(s.downtimeMs)"])
    }
}
