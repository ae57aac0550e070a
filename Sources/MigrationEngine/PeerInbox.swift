import Foundation
import MigrationWire

/// Frames from the peer, read on a dedicated thread so the main flow can keep
/// sending while it waits (an ABORT is seen at once, not after the next write).
final class PeerInbox: @unchecked Sendable {
    private let condition = NSCondition()
    private var frames: [Frame] = []
    private var failure: (any Error)?
    private var done = false
    private var problemHandler: (@Sendable (any Error) -> Void)?

    /// Reads until `isLast` says the frame ends the conversation, or an error.
    init(channel: FrameChannel, isLast: @escaping @Sendable (Frame) -> Bool) {
        let t = Thread { [self] in
            while true {
                do {
                    let frame = try channel.receive()
                    condition.lock()
                    frames.append(frame)
                    condition.broadcast()
                    condition.unlock()
                    if case .abort(let a) = frame.body { reportProblem(MigrationFailureBox(.peerAborted(a.reason, a.message))) }
                    if isLast(frame) { break }
                } catch {
                    condition.lock()
                    failure = error
                    condition.broadcast()
                    condition.unlock()
                    reportProblem(error)
                    break
                }
            }
            condition.lock(); done = true; condition.broadcast(); condition.unlock()
        }
        t.name = "peer-reader"
        t.start()
    }

    /// Calls `handler` (on the reader thread) when the peer aborts or reading fails, or at
    /// once if that already happened: the producer may be blocked where it cannot look.
    func onProblem(_ handler: @escaping @Sendable (any Error) -> Void) {
        condition.lock()
        problemHandler = handler
        condition.unlock()
        if let problem = pendingProblem() { handler(problem) }
    }

    private func reportProblem(_ error: any Error) {
        condition.lock(); let handler = problemHandler; condition.unlock()
        handler?(error)
    }

    /// The peer's abort or the reader's error, if one happened (non-blocking).
    func pendingProblem() -> (any Error)? {
        condition.lock(); defer { condition.unlock() }
        if let abort = frames.first(where: { if case .abort = $0.body { return true } else { return false } }),
           case .abort(let a) = abort.body {
            return MigrationFailureBox(.peerAborted(a.reason, a.message))
        }
        return failure
    }

    /// Blocks for the next frame; throws the reader's error once frames run out.
    /// With a deadline, throws a timeout naming `waitingFor` once it passes
    /// (a peer that sends keep-alives but never answers is still stuck).
    func next(deadlineSeconds: Double? = nil, waitingFor: String = "the peer") throws -> Frame {
        let deadline = deadlineSeconds.map { Date(timeIntervalSinceNow: $0) }
        condition.lock(); defer { condition.unlock() }
        while frames.isEmpty && failure == nil {
            if let deadline {
                if !condition.wait(until: deadline) && frames.isEmpty && failure == nil {
                    throw MigrationFailureBox(.timeout("no \(waitingFor) within \(Int(deadlineSeconds!)) s"))
                }
            } else {
                condition.wait()
            }
        }
        if !frames.isEmpty { return frames.removeFirst() }
        throw failure!
    }

    /// Waits until the reader thread has stopped.
    func join() {
        condition.lock()
        while !done { condition.wait() }
        condition.unlock()
    }
}
