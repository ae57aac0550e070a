import Foundation
import MigrationEngine
import Testing

/// `Sender.setDowntimeTarget`, `setMaxIterations`, `requestSwitchover` while a
/// migration runs. Each test holds the full pass back with a 500 kB/s limit
/// (about 6 s of data), changes a setting 300 ms into pre-copy, then lifts the
/// limit: the change is in force at the boundary that ends the full pass.
@Suite(.serialized)
struct RuntimeParameterTests {
    /// Runs one migration with `change` applied mid-pre-copy; returns the source's stats and events.
    private func migrate(_ options: SenderOptions, change: @escaping @Sendable (Sender) -> Void) throws -> (MigrationStats, EventLog) {
        let pair = try SimPair(memoryPages: 2048)
        let workload = Workload(pair.sourceSims, intervalMicroseconds: 2000)
        defer { workload.stop() }
        var options = options
        options.compression = .none
        options.bandwidthBytesPerSecond = 500_000
        let log = EventLog()
        let outcome = try Loopback.migrate(source: pair.source, sourceMemory: pair.sourceMemory,
                                           destination: pair.destination, destinationMemory: pair.destinationMemory,
                                           options: options, events: log.sink, whileRunning: { sender in
            while log.firstInstant({ if case .phase(.precopy) = $0 { true } else { false } }) == nil { usleep(5_000) }
            usleep(300_000)
            change(sender)
            sender.setBandwidth(nil)
        })
        _ = try outcome.destination.get()
        return (try outcome.source.get(), log)
    }

    /// An unreachable target (0.01 ms) met by raising it: the first iteration that
    /// can switch over (the one after the full pass) does, converged.
    @Test func raisingTheDowntimeTargetLetsItConverge() throws {
        var options = Loopback.quickOptions()
        options.downtimeTargetMs = 0.01
        options.maxIterations = 20
        let (stats, log) = try migrate(options) { sender in try? sender.setDowntimeTarget(ms: 1_000_000) }
        #expect(stats.iterations == 2, "iterations: \(stats.iterations)")
        #expect(stats.converged)
        #expect(stats.downtimeComparison?.targetMs == 1_000_000)
        #expect(log.figures.last?.downtimeTargetMs == 1_000_000)
    }

    /// Lowering the bound below the iterations done switches over at the next boundary.
    @Test func loweringMaxIterationsSwitchesOverAtTheNextBoundary() throws {
        var options = Loopback.quickOptions()
        options.downtimeTargetMs = 0.01
        options.maxIterations = 20
        let (stats, log) = try migrate(options) { sender in try? sender.setMaxIterations(1) }
        #expect(stats.iterations == 1)
        #expect(!stats.converged)
        #expect(log.switchoverReasons.last?.contains("--max-iterations 1") == true, "\(log.switchoverReasons)")
    }

    /// `switchover`: pre-copy ends at the boundary after the request, whatever the estimate.
    @Test func requestedSwitchoverEndsPrecopyAtTheNextBoundary() throws {
        var options = Loopback.quickOptions()
        options.downtimeTargetMs = 0.01
        options.maxIterations = 20
        let (stats, log) = try migrate(options) { sender in sender.requestSwitchover() }
        #expect(stats.iterations == 1)
        #expect(!stats.converged)
        #expect(log.switchoverReasons.last?.contains("requested by the controller") == true, "\(log.switchoverReasons)")
    }

    /// Once pre-copy is over the settings no longer act, so changing them is refused;
    /// out-of-range values are refused always.
    @Test func changesAfterSwitchoverAndOutOfRangeAreRefused() throws {
        let refusals = RefusalsSeen()
        _ = try migrate(Loopback.quickOptions()) { sender in
            refusals.attempt { () throws(ParameterChangeError) in try sender.setDowntimeTarget(ms: 0) }
            refusals.attempt { () throws(ParameterChangeError) in try sender.setMaxIterations(0) }
            sender.requestSwitchover()
            sender.setBandwidth(nil)
            while !sender.runtimeParameters.switchoverBegun { usleep(1_000) }
            refusals.attempt { () throws(ParameterChangeError) in try sender.setDowntimeTarget(ms: 10) }
            refusals.attempt { () throws(ParameterChangeError) in try sender.setMaxIterations(5) }
        }
        #expect(refusals.seen == [.outOfRange(parameter: "downtime-ms", value: "0.0"), .outOfRange(parameter: "max-iterations", value: "0"),
                                  .switchoverBegun, .switchoverBegun])
    }
}

final class RefusalsSeen: @unchecked Sendable {  // `values` only under `lock`
    private let lock = NSLock()
    private var values: [ParameterChangeError] = []
    /// Runs `change`; records its refusal, if any.
    func attempt(_ change: () throws(ParameterChangeError) -> Void) {
        do { try change() } catch { lock.withLock { values.append(error) } }
    }
    var seen: [ParameterChangeError] { lock.withLock { values } }
}
