import Foundation
import Testing
import MigrationEngine
import VFIODevice
import VFIOSimulator

/// The VMM handshake (issue 15 §3) through the engine with a fake VMM that
/// records each call and the device states it saw at that moment: the order of
/// vCPUs and devices is the whole point of the handshake.
@Suite(.serialized)
struct GuestHandshakeTests {
    static func pair() throws -> SimPair { try SimPair(memoryPages: 512) }

    /// One in-process migration of `pair` with a VMM on each side.
    static func migrate(_ pair: SimPair, source: RecordingGuest, destination: RecordingGuest) throws -> Loopback.Outcome {
        var options = Loopback.quickOptions()
        options.guestControl = source
        var receiverOptions = Loopback.quickReceiver()
        receiverOptions.guestControl = destination
        return try Loopback.migrate(source: pair.source, sourceMemory: pair.sourceMemory,
                                    destination: pair.destination, destinationMemory: pair.destinationMemory,
                                    options: options, receiverOptions: receiverOptions)
    }

    @Test func stopGuestComesBeforeTheDevicesStopAndStartGuestAfterTheyRun() throws {
        let pair = try Self.pair()
        let source = RecordingGuest(devices: pair.sourceSims)
        let destination = RecordingGuest(devices: pair.destinationSims)
        let outcome = try Self.migrate(pair, source: source, destination: destination)
        _ = try outcome.source.get()
        _ = try outcome.destination.get()
        #expect(try pair.identicalMemory())
        #expect(source.calls.map(\.call) == ["stop"], "\(source.calls)")
        #expect(source.calls.first?.states == [[.saving, .running]], "the devices still SAVING|RUNNING when the guest is asked to stop")
        #expect(destination.calls.map(\.call) == ["start"], "\(destination.calls)")
        #expect(destination.calls.first?.states == [.running], "start-guest only once the devices are RUNNING")
    }

    /// A refused (or timed-out) stop-guest rolls back, exit 2, and the VMM is
    /// told to resume after the devices run again; nothing is stop-and-copied.
    @Test func refusedStopGuestRollsBackAndResumesTheGuest() throws {
        let pair = try Self.pair()
        let source = RecordingGuest(devices: pair.sourceSims, refuseStop: true)
        let destination = RecordingGuest(devices: pair.destinationSims)
        let outcome = try Self.migrate(pair, source: source, destination: destination)
        guard case .failure(let e as MigrationError) = outcome.source else { Issue.record("the source should roll back"); return }
        guard case .guestNotStopped(let why) = e.failure else { Issue.record("expected guestNotStopped, got \(e.failure)"); return }
        #expect(why.contains("vCPUs busy"), "the cause is named: \(why)")
        #expect(e.phase == .stopcopy)
        #expect(e.disposition.rawValue == 2)
        #expect(source.calls.map(\.call) == ["stop", "resume"], "\(source.calls)")
        #expect(source.calls.last?.states == [.running], "resume-guest after the devices run again")
        #expect(pair.sourceSims[0].currentState == .running)
        #expect(destination.calls.isEmpty, "no start-guest without COMMIT")
        #expect(pair.destinationSims[0].currentState != .running)
    }

    /// The guest stopped, then a device fails to stop: rollback, devices RUNNING, then resume-guest.
    @Test func failureAfterTheGuestStoppedResumesIt() throws {
        let pair = try Self.pair()
        pair.sourceSims[0].inject(.failTransition(to: [.saving]))
        let source = RecordingGuest(devices: pair.sourceSims)
        var options = Loopback.quickOptions()
        options.guestControl = source
        let outcome = try Loopback.migrate(source: pair.source, sourceMemory: pair.sourceMemory,
                                           destination: pair.destination, destinationMemory: pair.destinationMemory,
                                           options: options)
        guard case .failure(let e as MigrationError) = outcome.source else { Issue.record("the source should roll back"); return }
        #expect(e.disposition.rawValue == 2)
        #expect(source.calls.map(\.call) == ["stop", "resume"], "\(source.calls)")
        #expect(source.calls.last?.states == [.running])
    }
}

/// A VMM stand-in: records each request with the devices' states at that moment.
final class RecordingGuest: GuestControl, @unchecked Sendable {  // `recorded` only under `lock`
    struct Call { var call: String; var states: [DeviceState] }
    struct Refused: Error, CustomStringConvertible { var description: String { "vCPUs busy" } }
    private let lock = NSLock()
    private var recorded: [Call] = []
    private let devices: [SimulatedDevice]
    private let refuseStop: Bool

    init(devices: [SimulatedDevice], refuseStop: Bool = false) {
        self.devices = devices
        self.refuseStop = refuseStop
    }

    var calls: [Call] { lock.withLock { recorded } }

    private func record(_ call: String) {
        let states = devices.map(\.currentState)
        lock.withLock { recorded.append(Call(call: call, states: states)) }
    }

    func stopGuest() throws {
        record("stop")
        if refuseStop { throw Refused() }
    }
    func resumeGuest() { record("resume") }
    func startGuest() { record("start") }
}
