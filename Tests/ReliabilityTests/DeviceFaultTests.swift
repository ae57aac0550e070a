import Foundation
import Testing
import MigrationEngine
import MigrationTLS
import MigrationWire
import VFIODevice
import VFIOSimulator

/// Device errors through the simulated vendor driver's fault hooks.
/// Two devices, the fault on the second, so a device that had already moved is
/// checked to be rolled back too.
@Suite(.serialized)
struct DeviceFaultTests {
    enum Fault: String, CaseIterable, Sendable {
        case stateWriteFailsAtSavingRunning, stateWriteFailsAtSaving, saveReadFailsInPrecopy,
             saveReadFailsInStopAndCopy, resumeWriteRejected
    }

    static func pair() throws -> SimPair {
        try SimPair(names: ["gpu0", "nic0"], stateSize: 96 << 10, memoryPages: 512, maxChunk: 8 << 10)
    }

    @Test(arguments: Fault.allCases)
    func deviceFaultBeforeCommitRollsBack(_ fault: Fault) throws {
        let pair = try Self.pair()
        let nicSource = pair.sourceSims[1], nicDestination = pair.destinationSims[1]
        var expectedSourcePhase: MigrationPhase
        var cause: String
        switch fault {
        case .stateWriteFailsAtSavingRunning:
            nicSource.inject(.failTransition(to: [.saving, .running])); expectedSourcePhase = .precopy; cause = "did not reach SAVING|RUNNING"
        case .stateWriteFailsAtSaving:
            nicSource.inject(.failTransition(to: [.saving])); expectedSourcePhase = .stopcopy; cause = "did not reach SAVING"
        case .saveReadFailsInPrecopy:
            nicSource.inject(.failSaveRead(chunk: 3)); expectedSourcePhase = .precopy; cause = "failed reading save chunk 3"
        case .saveReadFailsInStopAndCopy:
            // Armed at the switch-over (below): every chunk number from there on fails,
            // so the first stop-and-copy read is the one that fails.
            expectedSourcePhase = .stopcopy; cause = "failed reading save chunk"
        case .resumeWriteRejected:
            nicDestination.inject(.rejectResumeData(chunk: 2)); expectedSourcePhase = .precopy; cause = "peer aborted (deviceError)"
        }
        let armAtSwitchover: @Sendable (MigrationEvent, FaultProxy?) -> Void = { event, _ in
            if case .switchover = event, fault == .saveReadFailsInStopAndCopy {
                for k in 0..<4000 { nicSource.inject(.failSaveRead(chunk: k)) }
            }
        }
        let o = try Rig.migrate(pair, senderEvents: armAtSwitchover)
        try Guarantee.rolledBack(o, pair, sourcePhase: [expectedSourcePhase, .stopcopy, .ready])
        guard let s = o.sourceError, let d = o.destinationError else { return }
        let text = "\(s)"
        #expect(text.contains(cause), "the source names the cause: \(text)")
        #expect(text.contains("phase \(s.phase)"))
        if fault == .resumeWriteRejected {
            // The destination's driver refused the chunk: the destination names the device and cause.
            #expect(d.device == "nic0" && "\(d)".containsAll("device nic0", "resume chunk 2 rejected"), "\(d)")
            guard case .peerAborted(let reason, let message) = s.failure else { Issue.record("source: \(s.failure)"); return }
            #expect(reason == .deviceError && message.contains("nic0"), "the source learns which device failed: \(message)")
        } else {
            #expect(s.phase == expectedSourcePhase, "\(s)")
            #expect(s.device == "nic0" && text.contains("device nic0") && text.contains("EIO"), "\(text)")
            // The destination learns why from the source's ABORT.
            guard case .peerAborted(let reason, let message) = d.failure else { Issue.record("destination: \(d.failure)"); return }
            #expect(reason == .deviceError && message.contains("nic0"), "\(message)")
        }
        // gpu0 had moved too (SAVING|RUNNING, maybe SAVING) and is RUNNING again.
        let gpuWrites = pair.sourceRegions[0].stateWrites
        if !gpuWrites.isEmpty { #expect(gpuWrites.last == .running, "\(gpuWrites)") }
    }

    @Test func destinationFailingToResumeAfterCommitIsReportedAndTheSourceStaysStopped() throws {
        let pair = try Self.pair()
        pair.destinationSims[1].inject(.failTransition(to: .running))
        let o = try Rig.migrate(pair)
        guard let d = o.destinationError, let s = o.sourceError else {
            Issue.record("both sides should fail: \(o.source) / \(o.destination)"); return
        }
        #expect(d.phase == .resume && d.disposition == .afterCommit && d.device == "nic0", "\(d)")
        #expect("\(d)".containsAll("phase resume", "device nic0", "did not reach RUNNING", "operator"), "\(d)")
        #expect(s.disposition == .destinationFailed && s.phase == .commit, "\(s)")
        guard case .peerAborted(.deviceError, let message) = s.failure else { Issue.record("\(s.failure)"); return }
        #expect(message.contains("nic0"))
        // After COMMIT the source never runs a device again.
        for (i, r) in pair.sourceRegions.enumerated() {
            #expect(!r.stateWrites.dropFirst().contains { $0.contains(.running) }, "\(pair.names[i]): \(r.stateWrites)")
            #expect(try !pair.source[i].device.readState().contains(.running))
        }
        // The failing device is not RUNNING (it stays in RESUMING for the operator).
        #expect(try pair.destination[1].device.readState() == .resuming)
    }
    /// The destination's driver refuses the *last* chunk: by then the source has sent
    /// COMPLETE and only sends keep-alives while it waits for READY. The destination must
    /// act on its applier's failure at once, not wait for a frame that never comes.
    @Test func lastResumeChunkRejectedWhileTheSourceWaitsForReady() throws {
        let m = try FrameMap.measured.get()
        let chunks = m.toReceiver.filter { $0.type == 2 }.count
        let pair = try FrameMap.scenario()
        pair.destinationSims[0].inject(.rejectResumeData(chunk: chunks - 1))
        let started = ContinuousClock.now
        let o = try Rig.migrate(pair, options: Rig.senderOptions(peerTimeout: 4), receiverOptions: Rig.receiverOptions(peerTimeout: 4))
        let elapsed = (ContinuousClock.now - started).seconds
        #expect(elapsed < 30, "the failure is reported, not waited on (before the fix this hung for good): \(elapsed) s")
        try Guarantee.rolledBack(o, pair, sourcePhase: [.stopcopy, .ready], destinationPhase: [.stopcopy, .complete])
        guard let d = o.destinationError, let s = o.sourceError else { return }
        #expect("\(d)".containsAll("device gpu0", "resume chunk \(chunks - 1) rejected"), "\(d)")
        guard case .peerAborted(.deviceError, let message) = s.failure else { Issue.record("source: \(s.failure)"); return }
        #expect(message.contains("gpu0"))
    }
    /// The rollback itself fails (the device refuses RUNNING): the error must say so, with
    /// the device, instead of claiming a clean rollback.
    @Test func failedRollbackIsReportedWithTheDevice() throws {
        let pair = try Self.pair()
        pair.sourceSims[1].inject(.failSaveRead(chunk: 2))
        pair.sourceSims[1].inject(.failTransition(to: .running))
        let o = try Rig.migrate(pair)
        guard let s = o.sourceError else { Issue.record("source should fail: \(o.source)"); return }
        #expect(s.rollbackFailure?.contains("nic0") ?? false, "\(s)")
        #expect(s.disposition == .rollbackFailed, "exit 4: a device may run nowhere, an operator must act")
        #expect("\(s)".containsAll("device nic0", "rollback failed", "did not reach RUNNING"), "\(s)")
        #expect(try pair.source[0].device.readState() == .running, "the other device was rolled back")
        #expect(try pair.source[1].device.readState() == [.saving, .running], "nic0 reads back where it was left")
        Guarantee.destinationNeverRan(pair)
    }
}
