import Foundation
import SyncPrimitives

/// When an event happened, three ways: QMP's seconds + microseconds since the
/// epoch, RFC 3339 for people and log tools, and monotonic seconds since the
/// clock's origin (which never jumps, so durations between events are honest).
public struct EventTimestamp: Sendable, Equatable {
    public var epochMicroseconds: Int64
    public var monotonicSeconds: Double

    public init(epochMicroseconds: Int64, monotonicSeconds: Double) {
        self.epochMicroseconds = epochMicroseconds
        self.monotonicSeconds = monotonicSeconds
    }

    public var jsonObject: JSONValue {
        let seconds = epochMicroseconds / 1_000_000
        let micros = epochMicroseconds % 1_000_000
        return .object([
            "seconds": .int(seconds),
            "microseconds": .int(micros),
            "rfc3339": .string(Self.rfc3339(seconds: seconds, micros: micros)),
            "monotonic": .double(monotonicSeconds),
        ])
    }

    /// `2026-11-30T05:32:00.123456Z` (UTC, always six fraction digits).
    static func rfc3339(seconds: Int64, micros: Int64) -> String {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ",
                      parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
                      parts.tm_hour, parts.tm_min, parts.tm_sec, micros)
    }
}

/// The origin of the monotonic figure; share one per process so the control
/// socket and `--json` agree.
public struct EventClock: Sendable {
    public let origin: Double

    public init(origin: Double = SyncPrimitives.monotonicSeconds()) { self.origin = origin }

    public func now() -> EventTimestamp {
        var wall = timespec()
        clock_gettime(CLOCK_REALTIME, &wall)
        let micros = Int64(wall.tv_sec) * 1_000_000 + Int64(wall.tv_nsec) / 1000
        return EventTimestamp(epochMicroseconds: micros, monotonicSeconds: SyncPrimitives.monotonicSeconds() - origin)
    }
}
