import Foundation

/// A bounded, ordered, parallel map: `submit` hands items to N worker threads,
/// results are consumed one at a time, in submission order, on a dedicated
/// consumer thread. At most `window` items are in flight, so a slow consumer
/// (a slow peer) blocks the producer instead of growing memory.
///
/// The first error from a worker or the consumer stops the pipeline: later
/// results are dropped unconsumed and `submit`/`finish` rethrow it.
final class OrderedPipeline<Input: Sendable, Output: Sendable>: @unchecked Sendable {
    typealias Transform = (Input) throws -> Output

    private let condition = NSCondition()
    /// Taken slots are set to nil at once: a consumed item must not stay
    /// referenced (an item holds up to a MiB of data) until the queue compacts.
    private var inputs: [(index: Int, item: Input)?] = []
    private var inputHead = 0
    private var results: [Int: Output] = [:]
    private var nextIndex = 0
    private var nextToConsume = 0
    private var inFlight = 0
    private var closed = false
    private var failure: (any Error)?
    private var interruption: (any Error)?
    private var liveThreads = 0
    private let window: Int

    /// `makeTransform` runs once on each worker thread (per-thread compressors);
    /// `consume` runs on the consumer thread, in order.
    init(name: String, workers: Int, window: Int,
         makeTransform: @escaping @Sendable () throws -> Transform,
         consume: @escaping @Sendable (Output) throws -> Void) {
        self.window = max(window, 1)
        let workerCount = max(workers, 1)
        liveThreads = workerCount + 1
        for i in 0..<workerCount {
            let t = Thread { [self] in self.workerLoop(makeTransform) }
            t.name = "\(name)-worker-\(i)"
            t.stackSize = 1 << 20
            t.start()
        }
        let c = Thread { [self] in self.consumerLoop(consume) }
        c.name = "\(name)-consumer"
        c.start()
    }

    /// Blocks while the window is full. Throws the pipeline's first error.
    func submit(_ item: Input) throws {
        condition.lock()
        defer { condition.unlock() }
        while inFlight >= window && failure == nil && interruption == nil { condition.wait() }
        if let failure { throw failure }
        if let interruption { throw interruption }
        precondition(!closed, "submit after finish")
        inputs.append((nextIndex, item))
        nextIndex += 1
        inFlight += 1
        condition.broadcast()
    }

    /// Waits until every submitted item is consumed, then stops the threads.
    func finish() throws {
        condition.lock()
        closed = true
        condition.broadcast()
        // Workers exit once the queue is empty, the consumer once all is consumed
        // (or on the first error).
        while liveThreads > 0 { condition.wait() }
        let failure = self.failure
        condition.unlock()
        if let failure { throw failure }
    }

    /// Stops the pipeline with `error` (first error wins) and waits for the threads.
    func abort(_ error: any Error) {
        condition.lock()
        if failure == nil { failure = error }
        closed = true
        condition.broadcast()
        while liveThreads > 0 { condition.wait() }
        condition.unlock()
    }

    /// Wakes a producer blocked in `submit` and makes every later `submit` throw `error`,
    /// without waiting and without failing what is already submitted (`finish` still
    /// reports the pipeline's own outcome): the producer's caller decides what to do.
    func interruptSubmit(_ error: any Error) {
        condition.lock()
        if interruption == nil { interruption = error }
        condition.broadcast()
        condition.unlock()
    }

    /// The first error, if the pipeline has failed.
    var error: (any Error)? {
        condition.lock(); defer { condition.unlock() }
        return failure
    }

    private func fail(_ error: any Error) {
        // caller holds the lock
        if failure == nil { failure = error }
        condition.broadcast()
    }

    private func threadExit() {
        condition.lock()
        liveThreads -= 1
        condition.broadcast()
        condition.unlock()
    }

    private func workerLoop(_ makeTransform: @Sendable () throws -> Transform) {
        defer { threadExit() }
        let transform: Transform
        do { transform = try makeTransform() } catch {
            condition.lock(); fail(error); condition.unlock(); return
        }
        while true {
            condition.lock()
            while inputHead == inputs.count && !closed && failure == nil { condition.wait() }
            if failure != nil || inputHead == inputs.count {
                condition.unlock(); return
            }
            let (index, item) = inputs[inputHead]!
            inputs[inputHead] = nil
            inputHead += 1
            if inputHead >= 64 && inputHead * 2 >= inputs.count {
                inputs.removeFirst(inputHead); inputHead = 0
            }
            condition.unlock()

            let output: Output
            do { output = try transform(item) } catch {
                condition.lock(); fail(error); condition.unlock(); return
            }
            condition.lock()
            results[index] = output
            condition.broadcast()
            condition.unlock()
        }
    }

    private func consumerLoop(_ consume: @Sendable (Output) throws -> Void) {
        defer { threadExit() }
        while true {
            condition.lock()
            while results[nextToConsume] == nil && failure == nil && !(closed && inFlight == 0) {
                condition.wait()
            }
            if failure != nil || (closed && inFlight == 0 && results[nextToConsume] == nil) {
                // Wake workers waiting on an empty queue so they exit too.
                closed = true
                condition.broadcast()
                condition.unlock(); return
            }
            let output = results.removeValue(forKey: nextToConsume)!
            condition.unlock()

            do { try consume(output) } catch {
                condition.lock(); fail(error); closed = true; condition.unlock(); return
            }
            condition.lock()
            nextToConsume += 1
            inFlight -= 1
            condition.broadcast()
            condition.unlock()
        }
    }
}
