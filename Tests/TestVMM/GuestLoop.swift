import Foundation
import SyncPrimitives

/// The guest's run loop on its own thread: one step at a time (one KVM_RUN until
/// the next exit, or one page the writer thread stores), and between two steps
/// the VMM's requests are honoured — pause, resume, stop. A pause therefore
/// takes effect at the next exit, as a VMM pausing a vCPU does.
final class GuestLoop: Sendable {
    enum Phase: Equatable, Sendable {
        case running
        case pauseRequested
        case paused
        case stopRequested
        /// The thread has ended; `failure` when a step threw.
        case stopped(failure: String?)

        var hasStopped: Bool { if case .stopped = self { true } else { false } }
    }

    private struct State {
        var phase = Phase.running
        var steps = 0
        /// Pause once this many steps are done (a sweep boundary, for tests).
        var pauseAtStep: Int?
    }

    private let state: ConditionValue<State>

    /// Between two steps the thread sleeps this long, so a guest spinning
    /// through pages does not take a whole core from the migration it races.
    static let restMicroseconds: UInt32 = 50

    /// `startPaused`: the thread waits for `resume` or `run(untilSteps:)` before its first step.
    init(startPaused: Bool = false, step: @escaping @Sendable () throws(KVMError) -> Void) {
        state = ConditionValue(State(phase: startPaused ? .paused : .running))
        let thread = Thread { [state] in Self.run(step, state) }
        thread.name = "guest vCPU"
        thread.start()
    }

    var steps: Int { state.withLock { $0.steps } }
    var phase: Phase { state.withLock { $0.phase } }

    /// Returns once the guest is paused (or has stopped): no write happens until `resume`.
    func pause() {
        state.withLock { s in if s.phase == .running { s.phase = .pauseRequested } }
        waitUntilHeld()
    }

    /// Runs (a paused loop too) until `target` steps are done, then holds it paused.
    func run(untilSteps target: Int) {
        state.withLock { s in
            s.pauseAtStep = max(target, s.steps)
            if s.phase == .paused { s.phase = .running }
        }
        waitUntilHeld()
    }

    /// Waits until `target` steps are done (or the deadline, in `monotonicSeconds()`); true if they are.
    func waitForSteps(_ target: Int, deadline: Double) -> Bool {
        state.wait(until: { $0.steps >= target || $0.phase.hasStopped }, deadline: deadline) { s, _ in s.steps >= target }
    }

    private func waitUntilHeld() {
        state.wait(until: { ($0.phase == .paused && $0.pauseAtStep == nil) || $0.phase.hasStopped }) { _, _ in }
    }

    func resume() {
        state.withLock { s in if s.phase == .paused || s.phase == .pauseRequested { s.phase = .running } }
    }

    /// Ends the thread and waits for it; a paused guest stops without another step.
    func stop() {
        state.withLock { s in if !s.phase.hasStopped { s.phase = .stopRequested } }
        state.wait(until: { $0.phase.hasStopped }) { _, _ in }
    }

    private static func run(_ step: @Sendable () throws(KVMError) -> Void, _ state: ConditionValue<State>) {
        while true {
            let goOn = state.wait(until: { $0.phase != .paused }) { s, _ -> Bool in
                // A stop wins over any pause.
                if s.phase == .stopRequested { s.phase = .stopped(failure: nil); return false }
                if let target = s.pauseAtStep, s.steps >= target {
                    s.pauseAtStep = nil
                    s.phase = .paused
                }
                if s.phase == .pauseRequested { s.phase = .paused }
                return true
            }
            guard goOn else { return }
            if state.withLock({ $0.phase == .paused }) { continue }  // just paused: wait for resume or stop
            do { try step() } catch {
                state.withLock { $0.phase = .stopped(failure: "\(error)") }
                return
            }
            state.withLock { $0.steps += 1 }
            usleep(restMicroseconds)
        }
    }
}
