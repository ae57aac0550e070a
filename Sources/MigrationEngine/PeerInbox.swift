import MigrationWire
import SyncPrimitives

/// Frames from the peer, read on a thread of their own so the session can keep
/// sending while it waits (an ABORT is seen at once, not after the next write).
final class PeerInbox: Sendable {
    private struct State {
        var frames: [Frame] = []
        var failure: MigrationFailure?
        var done = false
        var problemHandler: (@Sendable (MigrationFailure) -> Void)?
    }
    private let state = ConditionValue(State())

    /// Takes over `reader` and reads until `isLast` says the frame ends the
    /// conversation, or an error.
    init(reader: sending FrameReader, isLast: @escaping @Sendable (Frame) -> Bool) {
        startThread(named: "peer-reader") { self.read(reader, until: isLast) }
    }

    private func read(_ reader: FrameReader, until isLast: (Frame) -> Bool) {
        while true {
            let frame: Frame
            do { frame = try reader.receive() } catch {
                state.withLock { $0.failure = error }
                report(error)
                break
            }
            state.withLock { $0.frames.append(frame) }
            if case .abort(let a) = frame.body { report(.peerAborted(a.reason, a.message)) }
            if isLast(frame) { break }
        }
        state.withLock { $0.done = true }
    }

    /// Calls `handler` (on the reader thread) when the peer aborts or reading fails, or at
    /// once if that already happened: the producer may be blocked where it cannot look.
    func onProblem(_ handler: @escaping @Sendable (MigrationFailure) -> Void) {
        state.withLock { $0.problemHandler = handler }
        if let problem = pendingProblem() { handler(problem) }
    }

    private func report(_ problem: MigrationFailure) {
        state.withLock { $0.problemHandler }?(problem)
    }

    /// The peer's abort or the reader's error, if one happened (non-blocking).
    func pendingProblem() -> MigrationFailure? {
        state.withLock { s in
            for frame in s.frames { if case .abort(let a) = frame.body { return .peerAborted(a.reason, a.message) } }
            return s.failure
        }
    }

    /// Blocks for the next frame; throws the reader's error once frames run out.
    /// With a deadline, throws a timeout naming `waitingFor` once it passes
    /// (a peer that sends keep-alives but never answers is still stuck).
    func next(deadlineSeconds: Double? = nil, waitingFor: String = "the peer") throws(MigrationFailure) -> Frame {
        try state.wait(until: { !$0.frames.isEmpty || $0.failure != nil },
                       deadline: deadlineSeconds.map { monotonicSeconds() + $0 }) { (s, timedOut) throws(MigrationFailure) -> Frame in
            if timedOut { throw .timeout("no \(waitingFor) within \(Int(deadlineSeconds ?? 0)) s") }
            if !s.frames.isEmpty { return s.frames.removeFirst() }
            throw s.failure!
        }
    }

    /// Waits until the reader thread has stopped.
    func join() {
        state.wait(until: { $0.done }) { _, _ in }
    }
}
