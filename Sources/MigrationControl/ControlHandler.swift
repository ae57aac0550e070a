/// What the control server asks of the migration it controls. The engine
/// implements it; the server calls it from its own thread, one request at a
/// time, so each call must return promptly (record the wish, act on it later).
public protocol ControlHandler: Sendable {
    func query() -> ControlStatus
    /// Cancel before COMMIT: the source rolls back (as SIGINT does).
    func cancel()
    /// Apply the given values (nil = leave as is); throw `.refused` when the
    /// migration cannot take them now (e.g. after switch-over).
    func set(_ parameters: ControlParameters) throws(ControlError)
    /// Stop iterating and switch over at the next opportunity; throw `.refused`
    /// where there is nothing to switch over (the destination).
    func switchover() throws(ControlError)
}

/// The bandwidth cap on the wire.
public enum BandwidthLimit: Sendable, Equatable {
    case unlimited
    case bytesPerSecond(UInt64)
}

/// The settings `set` changes while a migration runs; nil means "not given".
/// `query` reports all of them.
public struct ControlParameters: Sendable, Equatable {
    public var downtimeMs: Double?
    public var bandwidth: BandwidthLimit?
    public var maxIterations: Int?

    public init(downtimeMs: Double? = nil, bandwidth: BandwidthLimit? = nil, maxIterations: Int? = nil) {
        self.downtimeMs = downtimeMs
        self.bandwidth = bandwidth
        self.maxIterations = maxIterations
    }

    public var isEmpty: Bool { downtimeMs == nil && bandwidth == nil && maxIterations == nil }
}

/// The answer to `query`: where the migration is and how fast it goes.
public struct ControlStatus: Sendable, Equatable {
    public var phase: String
    public var iteration: Int
    public var rawBytes: UInt64
    public var wireBytes: UInt64
    public var bytesPerSecond: Double
    public var pendingBytes: UInt64
    public var dirtyPages: UInt64
    public var etaSeconds: Double?
    /// Version 2 with resumption: `up`, `lost` or `reconnecting`, and the seconds
    /// without a connection so far (nil: a session that cannot resume).
    public var connection: String?
    public var outageSeconds: Double?
    public var parameters: ControlParameters

    public init(phase: String, iteration: Int = 0, rawBytes: UInt64 = 0, wireBytes: UInt64 = 0,
                bytesPerSecond: Double = 0, pendingBytes: UInt64 = 0, dirtyPages: UInt64 = 0,
                etaSeconds: Double? = nil, parameters: ControlParameters = ControlParameters()) {
        self.phase = phase
        self.iteration = iteration
        self.rawBytes = rawBytes
        self.wireBytes = wireBytes
        self.bytesPerSecond = bytesPerSecond
        self.pendingBytes = pendingBytes
        self.dirtyPages = dirtyPages
        self.etaSeconds = etaSeconds
        self.parameters = parameters
    }
}
