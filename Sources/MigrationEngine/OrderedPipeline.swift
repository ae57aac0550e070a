import Foundation
import SyncPrimitives

/// A bounded, ordered, parallel map: `submit` hands items to N worker threads,
/// results are consumed in submission order on a dedicated consumer thread.
/// At most `window` items are in flight, so a slow consumer (a slow peer)
/// blocks the producer instead of growing memory.
///
/// The first error from a worker or the consumer stops the pipeline: later
/// results are dropped unconsumed and `submit`/`finish` rethrow it.
///
/// Three locks, one per hand-off, so a change wakes only the threads that wait
/// for it (each `ConditionValue` change wakes all its waiters): the input queue
/// (workers wait), the results (the consumer waits), the window and the outcome
/// (the producer and `finish` wait). No thread holds two of them at once.
///
/// An item that needs no transform (`submit(passthrough:)`) skips the workers:
/// it is stored as done in its sequence slot, so it costs no worker wake-up and
/// no second hand-off, and still counts against the window and keeps its order.
final class OrderedPipeline<Input: Sendable, Output: Sendable, Failure: Error>: Sendable {
    typealias Transform = (Input) throws(Failure) -> Output
    typealias Consume = (Output) throws(Failure) -> Void
    /// A consumer that may change the output it is handed, which it owns alone
    /// (a frame numbered in place without a copy).
    typealias ConsumeInPlace = (inout Output) throws(Failure) -> Void

    private struct Inputs {
        /// Taken slots are set to nil at once: a consumed item must not stay
        /// referenced (an item holds up to a MiB of data) until the queue compacts.
        var items: [(index: Int, item: Input)?] = []
        var head = 0
        var closed = false
        var stopped = false
    }
    private struct Results {
        var ready: [Int: Output] = [:]
        var nextToConsume = 0
        /// Set by `finish`: the consumer is done once it has consumed this many.
        var total: Int?
        var stopped = false
    }
    private struct Control {
        var inFlight = 0
        /// Sequence numbers are taken here, with the window slot: a passthrough
        /// item then never touches the input queue (whose change wakes the workers).
        var nextIndex = 0
        var finished = false
        var failure: Failure?
        var interruption: Failure?
        var liveThreads = 0
    }
    private let inputs = ConditionValue(Inputs())
    private let results = ConditionValue(Results())
    private let control = ConditionValue(Control())
    private let window: Int

    /// `makeTransform` runs once on each worker thread (per-thread compressors),
    /// `makeConsumer` once on the consumer thread (whose state no other thread sees);
    /// what it returns consumes the outputs there, in order.
    convenience init(name: String, workers: Int, window: Int,
                     makeTransform: @escaping @Sendable () throws(Failure) -> Transform,
                     makeConsumer: @escaping @Sendable () -> Consume) {
        self.init(name: name, workers: workers, window: window, makeTransform: makeTransform, makeInPlaceConsumer: {
            let consume = makeConsumer()
            return { (output: inout Output) throws(Failure) in try consume(output) }
        })
    }

    init(name: String, workers: Int, window: Int,
         makeTransform: @escaping @Sendable () throws(Failure) -> Transform,
         makeInPlaceConsumer makeConsumer: @escaping @Sendable () -> ConsumeInPlace) {
        self.window = max(window, 1)
        let workerCount = max(workers, 1)
        control.withLock { $0.liveThreads = workerCount + 1 }
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
        let index = try takeSlot()
        inputs.withLock { $0.items.append((index, item)) }
    }

    /// Hands `output` to the consumer in its place in the order, without a worker:
    /// for an item the transform would pass through unchanged. Blocks while the
    /// window is full; throws the pipeline's first error.
    func submit(passthrough output: consuming Output) throws(Failure) {
        let index = try takeSlot()
        // Moved in (as a worker's output is): the consumer must hold the only reference.
        // Only the consumer waits on the results; it re-sleeps unless this is next in order.
        var output: Output? = consume output
        results.withLock { $0.ready[index] = output.take() }
    }

    /// Waits for room in the window, then takes it and the next sequence number.
    private func takeSlot() throws(Failure) -> Int {
        try control.wait(until: { [window] c in c.inFlight < window || c.failure != nil || c.interruption != nil }) {
            (c: inout Control, _) throws(Failure) -> Int in
            if let failure = c.failure { throw failure }
            if let interruption = c.interruption { throw interruption }
            precondition(!c.finished, "submit after finish")
            c.inFlight += 1
            defer { c.nextIndex += 1 }
            return c.nextIndex
        }
    }

    /// Waits until every submitted item is consumed, then stops the threads.
    func finish() throws(Failure) {
        // Workers exit once the queue is empty, the consumer once all is consumed
        // (or on the first error).
        let total = control.withLock { c in
            c.finished = true
            return c.nextIndex
        }
        inputs.withLock { $0.closed = true }
        results.withLock { $0.total = total }
        if let failure = control.wait(until: { $0.liveThreads == 0 }, { c, _ in c.failure }) { throw failure }
    }

    /// Stops the pipeline with `error` (first error wins) and waits for the threads.
    func abort(_ error: Failure) {
        fail(error)
        control.wait(until: { $0.liveThreads == 0 }) { _, _ in }
    }

    /// Wakes a producer blocked in `submit` and makes every later `submit` throw `error`,
    /// without waiting and without failing what is already submitted (`finish` still
    /// reports the pipeline's own outcome): the producer's caller decides what to do.
    func interruptSubmit(_ error: Failure) {
        control.withLock { c in if c.interruption == nil { c.interruption = error } }
    }

    /// The first error, if the pipeline has failed.
    var error: Failure? { control.withLock { $0.failure } }

    /// Records the first error and stops every thread at its next look.
    private func fail(_ error: Failure) {
        control.withLock { c in if c.failure == nil { c.failure = error } }
        inputs.withLock { $0.stopped = true }
        results.withLock { $0.stopped = true }
    }

    private func threadExits() { control.withLock { $0.liveThreads -= 1 } }

    private func workerLoop(_ makeTransform: @Sendable () throws(Failure) -> Transform) {
        defer { threadExits() }
        let transform: Transform
        do { transform = try makeTransform() } catch { fail(error); return }
        while let (index, item) = takeInput() {
            do {
                // Moved in, not copied: once the consumer takes it, nobody else may hold
                // a reference, or its change in place would copy the whole buffer.
                var output: Output? = try transform(item)
                results.withLock { $0.ready[index] = output.take() }
            } catch { fail(error); return }
        }
    }

    /// The next input in order; nil once the pipeline failed or is closed and drained.
    private func takeInput() -> (Int, Input)? {
        inputs.wait(until: { $0.head < $0.items.count || $0.closed || $0.stopped }) { q, _ in
            guard !q.stopped, q.head < q.items.count else { return nil }
            let taken = q.items[q.head]!
            q.items[q.head] = nil
            q.head += 1
            if q.head >= 64 && q.head * 2 >= q.items.count {
                q.items.removeFirst(q.head)
                q.head = 0
            }
            return taken
        }
    }

    private func consumerLoop(_ consume: ConsumeInPlace) {
        defer { threadExits() }
        // Every result ready in order is taken at once: one wake-up for a run of them.
        while var batch = nextResults() {
            while var output = batch.popLast() {
                do { try consume(&output) } catch { fail(error); return }
                control.withLock { $0.inFlight -= 1 }
            }
        }
    }

    /// The results ready in submission order, last first (popped without a copy);
    /// nil once the pipeline failed or all is consumed.
    private func nextResults() -> [Output]? {
        results.wait(until: { $0.ready[$0.nextToConsume] != nil || $0.stopped || $0.total == $0.nextToConsume }) { r, _ in
            guard !r.stopped else { return nil }
            var batch: [Output] = []
            while let output = r.ready.removeValue(forKey: r.nextToConsume) {
                batch.append(output)
                r.nextToConsume += 1
            }
            guard !batch.isEmpty else { return nil }  // all consumed
            batch.reverse()
            return batch
        }
    }
}
