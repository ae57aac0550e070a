import SyncPrimitives

/// Version 2: the session's connection, as `progress` reports it (PROTOCOL.md §13.4).
public enum ConnectionState: String, Sendable, Codable {
    case up
    /// Broken; the source has not tried again yet, or the destination waits for it.
    case lost
    /// The source is trying a new connection.
    case reconnecting
}

/// What `progress` says about the connection in a resumable session.
public struct LinkFigures: Sendable, Codable, Equatable {
    public var connection: ConnectionState
    /// Seconds the session has been without a connection so far, every outage
    /// counted, the current one included.
    public var outageSeconds: Double
    /// From the devices stopping on: the downtime so far, in milliseconds (an
    /// outage in stop-and-copy lengthens it; the guest runs nowhere meanwhile).
    public var downtimeSoFarMs: Double?
}

/// Keeps the connection's state and the outage clock of a version-2 session and
/// reports each change as a `progress` event, so an operator (or `query`) sees the
/// outage while no data moves. Shared by the session thread and the thread that
/// reconnects (source) or waits for the source (destination).
final class LinkProgress: Sendable {
    private struct State {
        var last: Progress
        var connection = ConnectionState.up
        var lostAt: Double?
        var outageBefore = 0.0
        var stoppedAt: Double?
    }
    private let state: LockedValue<State>
    private let events: EventSink

    init(phase: MigrationPhase, events: @escaping EventSink) {
        state = LockedValue(State(last: Progress(phase: phase, iteration: 0, rawBytes: 0, wireBytes: 0, bytesPerSecond: 0,
                                                 pendingBytes: 0, dirtyPages: 0)))
        self.events = events
    }

    /// The session's own progress with the link's figures; remembered, so the
    /// reports during an outage carry the last known numbers.
    func annotate(_ progress: Progress) -> Progress {
        state.withLock { s in
            s.last = progress
            return Self.annotated(s, now: monotonicSeconds())
        }
    }

    /// The devices stopped: the downtime clock starts (it stops with the session).
    func devicesStopped() { state.withLock { s in if s.stoppedAt == nil { s.stoppedAt = monotonicSeconds() } } }

    /// The connection broke; `now`, when given, is where the session stands.
    func lost(_ now: Progress? = nil) { change(to: .lost, progress: now) }
    func reconnecting() { change(to: .reconnecting) }
    /// Still without a connection: the outage so far, again.
    func stillLost() { change(to: nil) }
    func up() { change(to: .up) }

    private func change(to connection: ConnectionState?, progress current: Progress? = nil) {
        let progress = state.withLock { s -> Progress in
            let now = monotonicSeconds()
            if let current { s.last = current }
            switch connection {
            case .lost?, .reconnecting?: if s.lostAt == nil { s.lostAt = now }
            case .up?:
                if let lostAt = s.lostAt { s.outageBefore += now - lostAt }
                s.lostAt = nil
            case nil: break
            }
            if let connection { s.connection = connection }
            return Self.annotated(s, now: now)
        }
        events(.progress(progress))
    }

    private static func annotated(_ s: State, now: Double) -> Progress {
        var p = s.last
        p.link = LinkFigures(connection: s.connection, outageSeconds: s.outageBefore + (s.lostAt.map { now - $0 } ?? 0),
                             downtimeSoFarMs: s.stoppedAt.map { (now - $0) * 1000 })
        return p
    }
}
