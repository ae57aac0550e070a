import MigrationTLS
import MigrationWire
import VFIODevice

/// Where in the lifecycle something happened. Named in every error and event.
public enum MigrationPhase: String, Sendable, Codable, CustomStringConvertible {
    case connect, handshake, hello, precopy, stopcopy, complete, ready, commit, resume, done
    public var description: String { rawValue }
}

/// What the operator has to do after a failure, and the process exit code for it.
public enum FailureDisposition: Int32, Sendable, Codable {
    /// Nothing was started (configuration, certificates, devices unavailable).
    case notStarted = 1
    /// Failed before COMMIT: the source runs the devices again; the destination never ran them.
    case rolledBack = 2
    /// Failed after COMMIT was sent: the VM may run nowhere or on the destination; an operator must look.
    case afterCommit = 3
    /// Failed before COMMIT and a source device could not be set RUNNING again:
    /// the destination never ran it, so it may run nowhere; an operator must look.
    case rollbackFailed = 4
    /// Failed after COMMIT, and the destination said so (its ABORT): its devices did
    /// not all resume and it will not start the guest; the source's stay stopped. A
    /// definite outcome, unlike 3: the VM runs on neither host.
    case destinationFailed = 5
}

/// The cause of a failed migration.
/// Every error inside the engine is one of these (`throws(MigrationFailure)`), so the
/// compiler sees that each maps to an ABORT reason and, with the session's state, to
/// an exit code. A device's failure names the device (nil: guest memory).
public enum MigrationFailure: Error, CustomStringConvertible {
    case device(DeviceError, device: String?)
    case wire(WireError)
    case tls(TLSError)
    case incompatible(String)
    case peerAborted(AbortReason, String)
    case digestMismatch(device: String, algorithm: DeviceDigestAlgorithm, expected: [UInt8], actual: [UInt8])
    case lengthMismatch(device: String, field: String, expected: UInt64, actual: UInt64)
    case unexpectedFrame(String)
    case peerClosed
    case timeout(String)
    case cancelled
    /// Pre-copy stalled or diverged and `--on-stall rollback` chose to cancel;
    /// `reason` names the figures (remaining set, rates, estimate).
    case notConverged(iterations: Int, reason: String)
    case configuration(String)
    /// The VMM did not confirm the guest stopped (refused, timed out, went away):
    /// the final round is never copied from a running guest.
    case guestNotStopped(String)
    /// `--dirty vmm`: no usable bitmap, or the VMM did not answer `dirty-sync`;
    /// without the guest's dirty pages the copy would be stale, so it fails.
    case guestDirtyLog(String)

    public var description: String {
        switch self {
        case .device(let e, _): return "device: \(e)"
        case .wire(let e): return "protocol: \(e)"
        case .tls(let e): return "TLS: \(e)"
        case .incompatible(let s): return "incompatible peer: \(s)"
        case .peerAborted(let r, let s): return "peer aborted (\(r)): \(s)"
        case .digestMismatch(let d, let algorithm, let e, let a):
            return "device \(d): \(algorithm.displayName) of the received device data \(hex(a)) differs from the source's \(hex(e))"
        case .lengthMismatch(let d, let f, let e, let a):
            return "device \(d): \(f) is \(a), the source sent \(e)"
        case .unexpectedFrame(let s): return "unexpected frame: \(s)"
        case .peerClosed: return "the peer closed the connection"
        case .timeout(let s): return "timed out: \(s)"
        case .cancelled: return "cancelled by the operator"
        case .notConverged(let n, let reason): return "did not converge after \(n) pre-copy iteration(s): \(reason)"
        case .configuration(let s): return "configuration: \(s)"
        case .guestNotStopped(let s): return "the VMM did not stop the guest: \(s)"
        case .guestDirtyLog(let s): return "the guest's dirty log (--dirty vmm): \(s)"
        }
    }

    /// The ABORT reason this side sends for the failure (docs/PROTOCOL.md §5.7). A peer's
    /// own ABORT is never answered (`isPeerAbort`), so its mapping is never sent.
    var abortReason: AbortReason {
        switch self {
        case .device: return .deviceError
        case .wire(.unsupportedVersion): return .incompatible   // §10: another version is a failed compatibility check
        case .wire, .unexpectedFrame: return .protocolError
        case .incompatible: return .incompatible
        case .digestMismatch, .lengthMismatch: return .digestMismatch
        case .cancelled: return .cancelled
        case .timeout, .notConverged: return .timeout
        // Ending a session by closing, without ABORT, breaks §2.4.
        case .peerClosed, .tls(.truncated), .tls(.connectionReset): return .protocolError
        case .tls(.readTimeout), .tls(.writeTimeout): return .timeout   // peer silent or not reading
        case .tls, .peerAborted, .configuration, .guestNotStopped, .guestDirtyLog: return .internalError
        }
    }
}

/// A failed migration: the phase, the device (if one is to blame), the cause,
/// and what state the devices were left in.
public struct MigrationError: Error, Sendable, CustomStringConvertible {
    public var phase: MigrationPhase
    public var device: String?
    public var failure: MigrationFailure
    public var disposition: FailureDisposition
    /// Set when rolling back itself failed (the source device could not be set RUNNING again).
    public var rollbackFailure: String?

    public init(phase: MigrationPhase, device: String? = nil, failure: MigrationFailure,
                disposition: FailureDisposition = .rolledBack, rollbackFailure: String? = nil) {
        self.phase = phase; self.device = device; self.failure = failure
        self.disposition = disposition; self.rollbackFailure = rollbackFailure
    }

    public var description: String {
        if case .configuration(let why) = failure, disposition == .notStarted {
            return "cannot start: \(why) (nothing was changed)"
        }
        var s = "migration failed in phase \(phase)"
        if let device { s += ", device \(device)" }
        s += ": \(failure)"
        switch disposition {
        case .notStarted: s += " (nothing was changed)"
        case .rolledBack: s += " (rolled back: no device was resumed on the destination)"
        case .afterCommit: s += " (after COMMIT: operator action needed)"
        case .rollbackFailed: s += " (rollback FAILED: a source device may not be running; operator action needed)"
        case .destinationFailed: s += " (after COMMIT: the destination reported it did not resume; the VM runs on neither host)"
        }
        if let rollbackFailure { s += "; rollback failed: \(rollbackFailure)" }
        return s
    }
}

extension MigrationFailure {
    /// §10: a peer of another version fails the compatibility check; it is not a protocol error.
    init(_ error: WireError) {
        if case .unsupportedVersion = error { self = .incompatible(error.description) } else { self = .wire(error) }
    }

    /// The device to blame, if one is.
    var device: String? {
        switch self {
        case .device(_, let d): return d
        case .digestMismatch(let d, _, _, _), .lengthMismatch(let d, _, _, _): return d
        default: return nil
        }
    }

    /// The device layer's own words (a device failure's description without its prefix).
    var deviceMessage: String? {
        switch self {
        case .device(let e, _): return "\(e)"
        default: return nil
        }
    }

    var isPeerAbort: Bool { if case .peerAborted = self { return true } else { return false } }

    /// The text of this side's ABORT: side, phase, device and cause, so the peer's
    /// operator learns what failed where.
    func abortMessage(side: String, phase: MigrationPhase) -> String {
        "\(side), phase \(phase)\(device.map { ", device \($0)" } ?? ""): \(self)"
    }
}

/// Runs one call into the device layer; its failure becomes `device`'s (nil: guest memory).
/// The device layer's public API throws only `DeviceError` (regions and dirty sources
/// included), so there is no "some other error" case to guess a meaning for.
func deviceCall<T>(_ device: String?, _ body: () throws(DeviceError) -> T) throws(MigrationFailure) -> T {
    do throws(DeviceError) { return try body() } catch { throw .device(error, device: device) }
}

func hex(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef")
    var s = ""
    s.reserveCapacity(bytes.count * 2)
    for b in bytes { s.append(digits[Int(b >> 4)]); s.append(digits[Int(b & 15)]) }
    return s
}
