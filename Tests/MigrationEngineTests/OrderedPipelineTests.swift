import Foundation
import Testing
@testable import MigrationEngine
import SyncPrimitives

/// Counts live payloads, to see what the pipeline still holds.
final class LiveCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var live = 0
    private var peakLive = 0
    func inc() { lock.lock(); live += 1; peakLive = max(peakLive, live); lock.unlock() }
    func dec() { lock.lock(); live -= 1; lock.unlock() }
    var current: Int { lock.lock(); defer { lock.unlock() }; return live }
    var peak: Int { lock.lock(); defer { lock.unlock() }; return peakLive }
}

final class Payload: @unchecked Sendable {
    let counter: LiveCounter
    let value: Int
    init(_ value: Int, _ counter: LiveCounter) { self.value = value; self.counter = counter; counter.inc() }
    deinit { counter.dec() }
}

@Suite struct OrderedPipelineTests {
    @Test func consumesInOrderAndHoldsNoMoreThanTheWindow() {
        let counter = LiveCounter()
        let consumed = LockedArray()
        let window = 6
        let pipeline = OrderedPipeline<Payload, Payload, Never>(
            name: "test", workers: 3, window: window,
            makeTransform: { { p in
                usleep(UInt32.random(in: 0...300))          // workers finish out of order
                return Payload(p.value * 2, p.counter) } },
            makeConsumer: { { p in usleep(100); consumed.append(p.value) } })
        for i in 0..<300 { pipeline.submit(Payload(i, counter)) }
        pipeline.finish()
        #expect(consumed.values == (0..<300).map { $0 * 2 })
        // Each item in flight is at most an input and an output; consumed items are let go.
        #expect(counter.peak <= 2 * window + 2, "peak live payloads \(counter.peak)")
        #expect(counter.current == 0)
    }

    /// An in-place consumer owns what it is handed: changing it changes the
    /// worker's buffer, not a copy (a frame is numbered in place this way).
    @Test func anInPlaceConsumerChangesTheOutputWithoutCopyingIt() {
        struct Owned: Sendable {
            var bytes: [UInt8]
            let address: Int
        }
        let copies = LockedArray(), consumed = LockedArray()
        let pipeline = OrderedPipeline<Int, Owned, Never>(
            name: "test", workers: 2, window: 4,
            makeTransform: { { (i: Int) -> Owned in
                usleep(UInt32.random(in: 0...200))  // results become ready in runs, out of order
                var bytes = [UInt8](repeating: UInt8(i % 256), count: 4096)
                let address = bytes.withUnsafeMutableBufferPointer { Int(bitPattern: $0.baseAddress) }
                return Owned(bytes: bytes, address: address) } },
            makeInPlaceConsumer: { { (output: inout Owned) in
                output.bytes[0] &+= 1
                if output.bytes.withUnsafeBufferPointer({ Int(bitPattern: $0.baseAddress) }) != output.address { copies.append(1) }
                consumed.append(Int(output.bytes[1])) } })
        for i in 0..<200 { pipeline.submit(i) }
        pipeline.finish()
        #expect(consumed.values == (0..<200).map { $0 % 256 })
        #expect(copies.values.isEmpty, "\(copies.values.count) outputs were copied before the consumer changed them")
    }

    @Test func finishingWithNothingSubmittedStopsEveryThread() throws {
        let pipeline = OrderedPipeline<Int, Int, Never>(name: "test", workers: 2, window: 4,
                                                         makeTransform: { { $0 } }, makeConsumer: { { _ in } })
        pipeline.finish()  // returns only once the workers and the consumer have exited
        #expect(pipeline.error == nil)
    }

    @Test func firstErrorStopsThePipeline() throws {
        struct Boom: Error {}
        let pipeline = OrderedPipeline<Int, Int, Boom>(
            name: "test", workers: 2, window: 4,
            makeTransform: { { (i: Int) throws(Boom) -> Int in if i == 17 { throw Boom() }; return i } },
            makeConsumer: { { _ in } })
        var thrown = false
        do { for i in 0..<1000 { try pipeline.submit(i) }; try pipeline.finish() } catch { thrown = true }
        #expect(thrown)
    }

    /// Every third item skips the workers; the transform marks what it handled
    /// (negated), so an item in the wrong place or through the wrong path shows.
    @Test func passthroughItemsKeepTheirPlaceAmongTransformedOnes() {
        let transformed = LockedArray(), consumed = LockedArray()
        let pipeline = OrderedPipeline<Int, Int, Never>(
            name: "test", workers: 3, window: 8,
            makeTransform: { { (i: Int) -> Int in
                usleep(UInt32.random(in: 0...300))  // later passthrough items are ready first
                transformed.append(i)
                return -i } },
            makeConsumer: { { consumed.append($0) } })
        for i in 0..<300 {
            if i % 3 == 0 { pipeline.submit(passthrough: i) } else { pipeline.submit(i) }
        }
        pipeline.finish()
        #expect(consumed.values == (0..<300).map { $0 % 3 == 0 ? $0 : -$0 })
        #expect(transformed.values.sorted() == (0..<300).filter { $0 % 3 != 0 }, "a passthrough item went through a worker")
    }

    /// Passthrough items take window slots: a slow consumer holds the producer
    /// back instead of letting them pile up.
    @Test func passthroughItemsCountAgainstTheWindow() {
        let counter = LiveCounter()
        let window = 4
        let pipeline = OrderedPipeline<Payload, Payload, Never>(
            name: "test", workers: 2, window: window,
            makeTransform: { { $0 } },  // one payload per item, wherever it is
            makeConsumer: { { _ in usleep(200) } })
        for i in 0..<200 {
            if i % 5 == 0 { pipeline.submit(Payload(i, counter)) } else { pipeline.submit(passthrough: Payload(i, counter)) }
        }
        pipeline.finish()
        // In flight, one being submitted, one just consumed and not yet let go.
        #expect(counter.peak <= window + 2, "peak live payloads \(counter.peak)")
        #expect(counter.current == 0)
    }

    /// A consumer failing on a passthrough item stops the pipeline: nothing after it
    /// is consumed and the producer gets the error.
    @Test func aFailureOnAPassthroughItemStopsThePipeline() {
        struct Boom: Error, Equatable {}
        let consumed = LockedArray()
        let pipeline = OrderedPipeline<Int, Int, Boom>(
            name: "test", workers: 2, window: 4,
            makeTransform: { { (i: Int) throws(Boom) -> Int in i } },
            makeConsumer: { { (i: Int) throws(Boom) in
                if i == 21 { throw Boom() }
                consumed.append(i) } })
        var thrown: Boom?
        do {
            for i in 0..<1000 {
                if i % 2 == 0 { try pipeline.submit(i) } else { try pipeline.submit(passthrough: i) }
            }
            try pipeline.finish()
        } catch { thrown = error }
        #expect(thrown == Boom())
        #expect(pipeline.error == Boom())
        let values = consumed.values
        #expect(values == Array(0..<min(values.count, 21)), "consumed out of order or past the failure: \(values)")
    }

    /// `abort` wakes a producer blocked on a full window of passthrough items,
    /// and every thread still exits.
    @Test func abortWakesAProducerBlockedOnPassthroughItems() {
        struct Boom: Error, Equatable {}
        let gate = ConditionValue(false)
        let aborted = ConditionValue(false)
        let window = 3
        let pipeline = OrderedPipeline<Int, Int, Boom>(
            name: "test", workers: 1, window: window,
            makeTransform: { { (i: Int) throws(Boom) -> Int in i } },
            makeConsumer: { { (_: Int) throws(Boom) in gate.wait(until: { $0 }) { _, _ in } } })
        var thrown: Boom?
        do {
            for i in 0..<window { try pipeline.submit(passthrough: i) }  // the window is now full
            let aborter = Thread {
                pipeline.abort(Boom())
                aborted.withLock { $0 = true }
            }
            aborter.start()
            try pipeline.submit(passthrough: window)  // blocks until the abort
        } catch { thrown = error }
        #expect(thrown == Boom())
        gate.withLock { $0 = true }  // let the consumer see the abort
        aborted.wait(until: { $0 }) { _, _ in }
        #expect(pipeline.error == Boom())
    }
}

final class LockedArray: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [Int] = []
    func append(_ v: Int) { lock.lock(); items.append(v); lock.unlock() }
    var values: [Int] { lock.lock(); defer { lock.unlock() }; return items }
}

@Suite struct PeriodicTaskTests {
    @Test func runsUntilStoppedAndStopWaitsForTheThread() {
        let runs = LiveCounter()
        let task = PeriodicTask(name: "test", interval: .milliseconds(1)) { runs.inc(); return true }
        while runs.current < 5 { usleep(1000) }
        task.stop()
        let after = runs.current
        usleep(20_000)
        #expect(runs.current == after, "no run after stop() returned")
    }

    @Test func endsByItselfWhenTheBodySaysSo() {
        let runs = LiveCounter()
        let task = PeriodicTask(name: "test", interval: .milliseconds(1)) { runs.inc(); return runs.current < 3 }
        // Wait for the thread however loaded the machine is, then give a body that
        // wrongly kept running time to run again.
        let deadline = monotonicSeconds() + 30
        while runs.current < 3 && monotonicSeconds() < deadline { usleep(1000) }
        usleep(50_000)
        #expect(runs.current == 3)
        task.stop()  // returns at once: the thread already ended
    }
}
