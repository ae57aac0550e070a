import Foundation
import SyncPrimitives

/// A bounded, ordered, parallel map: `submit` hands items to N worker threads,
/// results are consumed one at a time, in submission order, on a dedicated
/// consumer thread. At most `window` items are in flight, so a slow consumer
/// (a slow peer) blocks the producer instead of growing memory.
///
/// The first error from a worker or the consumer stops the pipeline: later
/// results are dropped unconsumed and `submit`/`finish` rethrow it.
final class OrderedPipeline<Input: Sendable, Output: Sendable, Failure: Error>: Sendable {
    typealias Transform = (Input) throws(Failure) -> Output
    typealias Consume = (Output) throws(Failure) -> Void

    private struct State {
        /// Taken slots are set to nil at once: a consumed item must not stay
        /// referenced (an item holds up to a MiB of data) until the queue compacts.
        var inputs: [(index: Int, item: Input)?] = []
        var inputHead = 0
        var results: [Int: Output] = [:]
        var nextIndex = 0
        var nextToConsume = 0
        var inFlight = 0
        var closed = false
        var failure: Failure?
        var interruption: Failure?
        var liveThreads = 0
    }
    private let state = ConditionValue(State())
    private let window: Int

    /// `makeTransform` runs once on each worker thread (per-thread compressors),
    /// `makeConsumer` once on the consumer thread (whose state no other thread sees);
    /// what it returns consumes the outputs there, in order.
    init(name: String, workers: Int, window: Int,
         makeTransform: @escaping @Sendable () throws(Failure) -> Transform,
         makeConsumer: @escaping @Sendable () -> Consume) {
        self.window = max(window, 1)
        let workerCount = max(workers, 1)
        state.withLock { $0.liveThreads = workerCount + 1 }
        for i in 0..<workerCount {
            let t = Thread { [self] in self.workerLoop(makeTransform) }
            t.name = "\(name)-worker-\(i)"
            t.stackSize = 1 << 20
            t.start()
        }
        let c = Thread { [self] in self.consumerLoop(makeConsumer()) }
        c.name = "\(name)-consumer"
        c.start()
    }

    /// Blocks while the window is full. Throws the pipeline's first error.
    func submit(_ item: Input) throws(Failure) {
        try state.wait(until: { [window] s in s.inFlight < window || s.failure != nil || s.interruption != nil }) {
            (s: inout State, _) throws(Failure) in
            if let failure = s.failure { throw failure }
            if let interruption = s.interruption { throw interruption }
            precondition(!s.closed, "submit after finish")
            s.inputs.append((s.nextIndex, item))
            s.nextIndex += 1
            s.inFlight += 1
        }
    }

    /// Waits until every submitted item is consumed, then stops the threads.
    func finish() throws(Failure) {
        // Workers exit once the queue is empty, the consumer once all is consumed
        // (or on the first error).
        state.withLock { $0.closed = true }
        if let failure = state.wait(until: { $0.liveThreads == 0 }, { s, _ in s.failure }) { throw failure }
    }

    /// Stops the pipeline with `error` (first error wins) and waits for the threads.
    func abort(_ error: Failure) {
        state.withLock { s in
            if s.failure == nil { s.failure = error }
            s.closed = true
        }
        state.wait(until: { $0.liveThreads == 0 }) { _, _ in }
    }

    /// Wakes a producer blocked in `submit` and makes every later `submit` throw `error`,
    /// without waiting and without failing what is already submitted (`finish` still
    /// reports the pipeline's own outcome): the producer's caller decides what to do.
    func interruptSubmit(_ error: Failure) {
        state.withLock { s in if s.interruption == nil { s.interruption = error } }
    }

    /// The first error, if the pipeline has failed.
    var error: Failure? { state.withLock { $0.failure } }

    private func fail(_ error: Failure) {
        state.withLock { s in
            if s.failure == nil { s.failure = error }
            s.closed = true
        }
    }

    private func workerLoop(_ makeTransform: @Sendable () throws(Failure) -> Transform) {
        defer { state.withLock { $0.liveThreads -= 1 } }
        let transform: Transform
        do { transform = try makeTransform() } catch { fail(error); return }
        while let (index, item) = takeInput() {
            do {
                let output = try transform(item)
                state.withLock { $0.results[index] = output }
            } catch { fail(error); return }
        }
    }

    /// The next input in order; nil once the pipeline failed or is closed and drained.
    private func takeInput() -> (Int, Input)? {
        state.wait(until: { $0.inputHead < $0.inputs.count || $0.closed || $0.failure != nil }) { s, _ in
            guard s.failure == nil, s.inputHead < s.inputs.count else { return nil }
            let taken = s.inputs[s.inputHead]!
            s.inputs[s.inputHead] = nil
            s.inputHead += 1
            if s.inputHead >= 64 && s.inputHead * 2 >= s.inputs.count {
                s.inputs.removeFirst(s.inputHead)
                s.inputHead = 0
            }
            return taken
        }
    }

    private func consumerLoop(_ consume: Consume) {
        defer { state.withLock { $0.liveThreads -= 1 } }
        while let output = nextResult() {
            do { try consume(output) } catch { fail(error); return }
            state.withLock { s in
                s.nextToConsume += 1
                s.inFlight -= 1
            }
        }
    }

    /// The next result in submission order; nil once the pipeline failed or all is consumed.
    private func nextResult() -> Output? {
        state.wait(until: { $0.results[$0.nextToConsume] != nil || $0.failure != nil || ($0.closed && $0.inFlight == 0) }) { s, _ in
            if s.failure != nil || s.results[s.nextToConsume] == nil {
                // Wake workers waiting on an empty queue so they exit too.
                s.closed = true
                return nil
            }
            return s.results.removeValue(forKey: s.nextToConsume)
        }
    }
}
