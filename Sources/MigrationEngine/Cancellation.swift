import MigrationTLS
import SyncPrimitives

/// The operator's cancel, shared by a `Sender` or `Receiver` and the session it runs:
/// it closes the session's stream, so blocked I/O wakes at once, and the session then
/// reports the cancel rather than the error that closing caused. On the source it is
/// ignored once COMMIT is on its way.
final class Cancellation: Sendable {
    private struct State {
        var cancelled = false
        var committed = false
        var stream: TLSStream?
    }
    private let state = LockedValue(State())

    func cancel() {
        let stream = state.withLock { s -> TLSStream? in
            guard !s.committed else { return nil }
            s.cancelled = true
            return s.stream
        }
        stream?.close()
    }

    /// The stream a cancel closes from now on; returns whether a cancel came first.
    func attach(_ stream: TLSStream) -> Bool {
        state.withLock { s in s.stream = stream; return s.cancelled }
    }

    var isCancelled: Bool { state.withLock { $0.cancelled } }

    /// From now on a cancel is ignored; false when one came first.
    func commit() -> Bool {
        state.withLock { s in
            guard !s.cancelled else { return false }
            s.committed = true
            return true
        }
    }
}
