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
        /// Version 2: a lost connection is being replaced, and how many were.
        var reconnecting = false
        var resumes = 0
    }
    private let state = ConditionValue(State())

    /// Takes over `reader` and reads until `isLast` says the frame ends the
    /// conversation, or an error. With `recovery` (version 2), a lost connection is
    /// replaced on this thread, which owns the decoder, before reading goes on.
    init(reader: sending FrameReader, recovery: SourceReconnect? = nil, isLast: @escaping @Sendable (Frame) -> Bool) {
        startThread(named: "peer-reader") { self.read(reader, recovery: recovery, until: isLast) }
    }

    private func read(_ reader: FrameReader, recovery: SourceReconnect?, until isLast: (Frame) -> Bool) {
        reading: while true {
            var frames: [Frame]
            do { frames = [try reader.receive()] } catch {
                guard let recovery, case .success(let missed) = recover(reader, recovery, after: error) else {
                    let failure = state.withLock { s in s.failure = s.failure ?? error; return s.failure! }
                    report(failure)
                    break
                }
                frames = missed
            }
            for frame in frames {
                state.withLock { $0.frames.append(frame) }
                if case .abort(let a) = frame.body { report(.peerAborted(a.reason, a.message)) }
                if isLast(frame) { break reading }
            }
        }
        state.withLock { $0.done = true }
    }

    private func recover(_ reader: FrameReader, _ recovery: SourceReconnect, after error: MigrationFailure) -> Result<[Frame], MigrationFailure> {
        state.withLock { $0.reconnecting = true }
        let result = recovery.recover(reader, after: error)
        state.withLock { s in
            s.reconnecting = false
            s.resumes += 1
            if case .failure(let failure) = result { s.failure = failure }
        }
        return result
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
    /// A reconnection restarts the deadline: the time lost to the outage is not the peer's.
    func next(deadlineSeconds: Double? = nil, waitingFor: String = "the peer") throws(MigrationFailure) -> Frame {
        var resumes = state.withLock { $0.resumes }
        while true {
            let frame = try state.wait(until: { !$0.frames.isEmpty || $0.failure != nil },
                                       deadline: deadlineSeconds.map { monotonicSeconds() + $0 }) { (s, timedOut) throws(MigrationFailure) -> Frame? in
                if timedOut {
                    guard s.reconnecting || s.resumes != resumes else { throw .timeout("no \(waitingFor) within \(Int(deadlineSeconds ?? 0)) s") }
                    resumes = s.resumes
                    return nil
                }
                if !s.frames.isEmpty { return s.frames.removeFirst() }
                throw s.failure!
            }
            if let frame { return frame }
        }
    }

    /// Waits until the reader thread has stopped.
    func join() {
        state.wait(until: { $0.done }) { _, _ in }
    }
}
