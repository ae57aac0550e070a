import Foundation
import TestSupport
import Testing
import MigrationEngine
import MigrationTLS
import MigrationWire
import VFIODevice

/// A TCP proxy between the two ends cuts the connection in
/// each phase, flips one byte of the TLS stream, or stalls. The cut points are frame
/// offsets measured in a clean run (`FrameMap`), not constants.
@Suite(.serialized)
struct ConnectionFaultTests {
    enum CutPoint: String, CaseIterable, Sendable {
        case handshakeClientHello, handshakeClientFinished, hello, firstPrecopyIteration, midBitmap,
             stopAndCopy, afterComplete, beforeReady, beforeCommit
    }

    static func map() throws -> FrameMap { try FrameMap.measured.get() }

    static func fault(_ point: CutPoint, _ m: FrameMap) throws -> FaultProxy.Fault {
        func need(_ e: FrameMap.Entry?, _ what: String) throws -> FrameMap.Entry {
            guard let e else { throw SetupError("the clean run has no \(what): \(m.toReceiver)") }
            return e
        }
        switch point {
        case .handshakeClientHello:
            return .cutAfterRawBytes(.toReceiver, m.clientHelloRecordBytes / 2)
        case .handshakeClientFinished:
            return .cutAfterRawBytes(.toReceiver, m.clientHandshakeBytes - 10)
        case .hello:
            return .cutInside(.toReceiver, plain: try need(m.first(1), "HELLO").plain.lowerBound + 10)
        case .firstPrecopyIteration:
            let end = try need(m.first(5), "ITERATION_END").plain.lowerBound
            let pages = m.toReceiver.filter { $0.type == 4 && $0.plain.upperBound <= end }
            guard !pages.isEmpty else { throw SetupError("no PAGES in the first iteration") }
            let p = pages[pages.count / 2]
            return .cutInside(.toReceiver, plain: (p.plain.lowerBound + p.plain.upperBound) / 2)
        case .midBitmap:
            let b = try need(m.first(3) { $0.detail == 2 }, "partial DIRTY_BITMAP")
            return .cutInside(.toReceiver, plain: (b.plain.lowerBound + b.plain.upperBound) / 2)
        case .stopAndCopy:
            let d = try need(m.first(2) { $0.detail == 1 }, "stop-and-copy DEVICE_DATA")
            return .cutInside(.toReceiver, plain: (d.plain.lowerBound + d.plain.upperBound) / 2)
        case .afterComplete:
            return .cutAfter(.toReceiver, plain: try need(m.first(7), "COMPLETE").plain.upperBound)
        case .beforeReady:
            guard let ready = m.toSender.first(where: { $0.type == 8 }) else { throw SetupError("no READY") }
            return .cutBefore(.toSender, plain: ready.plain.lowerBound)
        case .beforeCommit:
            return .cutBefore(.toReceiver, plain: try need(m.first(9), "COMMIT").plain.lowerBound)
        }
    }

    /// Runs the scenario against the real receiver with `fault` in the proxy.
    static func run(_ fault: FaultProxy.Fault, options: SenderOptions = Rig.senderOptions(),
                    receiverOptions: ReceiverOptions = Rig.receiverOptions()) throws -> (Outcome, SimPair, FrameMap) {
        let m = try map()
        let pair = try FrameMap.scenario()
        let iterationEnd = m.first(5)!.plain.upperBound
        let hook = { (pair: SimPair) -> @Sendable (MigrationEvent, FaultProxy?) -> Void in
            let sim = pair.sourceSims[0]
            return { event, proxy in
                if case .iterationEnd(let i, _, _, _, _) = event, i == 1 {
                    _ = proxy?.waitForwarded(.toReceiver, plain: iterationEnd, timeout: 20)
                    sim.simulateDMA(toPages: FrameMap.dmaPages)
                }
            }
        }(pair)
        let outcome = try Rig.migrate(pair, fault: fault, options: options, receiverOptions: receiverOptions, senderEvents: hook)
        return (outcome, pair, m)
    }

    static func isNetworkCause(_ f: MigrationFailure) -> Bool {
        switch f {
        case .tls, .peerClosed, .peerAborted: return true
        case .unexpectedFrame(let s): return s.contains("stream ended")
        default: return false
        }
    }

    @Test func cleanRunThroughTheProxyMigratesAndMatchesTheMap() throws {
        let m = try Self.map()
        // The map itself: every phase the cut tests need is there.
        #expect(m.toReceiver.first?.type == 1)
        #expect(m.first(3) { $0.detail == 2 } != nil, "a partial dirty bitmap in the second iteration")
        #expect(m.first(2) { $0.detail == 1 } != nil, "stop-and-copy data")
        #expect(m.toReceiver.last?.type == 9, "COMMIT is the last frame")
        let (o, pair, _) = try Self.run(.none)
        try Guarantee.migrated(o, pair)
        // The real receiver saw the same stream: the same number of plaintext bytes.
        let plain = o.proxy!.recordLog(.toReceiver).compactMap(\.plain).last?.upperBound ?? 0
        #expect(plain >= m.toReceiver.last!.plain.upperBound, "the sender's stream changed between runs")
    }

    @Test(arguments: CutPoint.allCases)
    func connectionCutRollsBack(_ point: CutPoint) throws {
        let m = try Self.map()
        let fault = try Self.fault(point, m)
        let (o, pair, _) = try Self.run(fault)
        let fired = o.proxy?.faultFired
        #expect(fired != nil, "the fault never fired: \(fault)")
        let context = "\(point): \(fault) → \(fired ?? "-"); source \(o.source); destination \(o.destination)"

        // Every error names its phase and a network cause; the error text says what happened.
        for e in [o.sourceError, o.destinationError].compactMap({ $0 }) {
            #expect(Self.isNetworkCause(e.failure), "\(context)")
            #expect("\(e)".contains("phase \(e.phase)"))
        }
        switch point {
        case .handshakeClientHello, .handshakeClientFinished:
            // Nothing started: no device was touched on either side.
            #expect(o.destinationTLSError != nil, "the listener's accept fails the handshake: \(context)")
            if let e = o.sourceError {
                #expect(e.phase == .hello && e.disposition == .notStarted, "\(context)")
            } else {
                #expect(o.sourceTLSError != nil, "\(context)")
            }
            #expect(pair.sourceRegions[0].stateWrites.isEmpty, "\(context)")
            #expect(pair.destinationRegions[0].stateWrites.isEmpty, "\(context)")
            Guarantee.sourceDevicesRunning(pair)
            Guarantee.destinationNeverRan(pair)
        case .hello:
            // The destination never got the source's HELLO: it touched nothing. The source
            // may already have started pre-copy; if so it rolled back.
            try Guarantee.rolledBack(o, pair, sourcePhase: [.hello, .precopy], destinationPhase: [.hello],
                                     sourceDisposition: [.notStarted, .rolledBack], destinationDisposition: [.notStarted])
            #expect(pair.destinationRegions[0].stateWrites.isEmpty, "\(context)")
        case .firstPrecopyIteration, .midBitmap:
            // The sender may be ahead of what passed the proxy: it names the phase it was in
            // when it noticed; the destination names the phase of what it had applied.
            try Guarantee.rolledBack(o, pair, sourcePhase: [.precopy, .stopcopy, .ready], destinationPhase: [.precopy])
        case .stopAndCopy:
            try Guarantee.rolledBack(o, pair, sourcePhase: [.stopcopy, .ready], destinationPhase: [.precopy])
            // The source stopped its device (SAVING) and ran it again.
            #expect(pair.sourceRegions[0].stateWrites.suffix(2) == [.saving, .running], "\(pair.sourceRegions[0].stateWrites)")
        case .afterComplete, .beforeReady:
            // COMPLETE reached the destination (it may have verified and sent READY) but the
            // source never saw READY: both roll back.
            try Guarantee.rolledBack(o, pair, sourcePhase: [.ready],
                                     destinationPhase: point == .beforeReady ? [.ready] : [.complete, .ready])
        case .beforeCommit:
            // COMMIT was sent and lost: the source must not run the device again (exit 3,
            // an operator decides); the destination never got COMMIT, so it never resumes.
            guard let s = o.sourceError else { Issue.record("source should fail: \(context)"); return }
            #expect(s.phase == .commit && s.disposition == .afterCommit, "\(context)")
            #expect("\(s)".contains("operator"))
            #expect(!pair.sourceRegions[0].stateWrites.dropFirst().contains { $0.contains(.running) },
                    "after SAVING|RUNNING → SAVING the source never wrote RUNNING: \(pair.sourceRegions[0].stateWrites)")
            #expect(try !pair.source[0].device.readState().contains(.running))
            guard let d = o.destinationError else { Issue.record("destination should fail: \(context)"); return }
            #expect(d.phase == .ready && d.disposition == .rolledBack, "\(context)")
            Guarantee.destinationNeverRan(pair)
        }
    }

    @Test func flippedTLSByteIsATLSErrorAndTheFrameIsNotApplied() throws {
        let m = try Self.map()
        let end = m.first(5)!.plain.lowerBound
        // A PAGES frame of the first pass whose pages are not all zero on the source.
        let pair0 = try FrameMap.scenario()
        guard let target = m.toReceiver.last(where: { e in
            e.type == 4 && e.plain.upperBound <= end && e.plain.count > 4096 &&
            ((try? pair0.sourceMemory.readPages(startPFN: e.detail, count: 64)).map { $0.contains { $0 != 0 } } ?? false)
        }) else { throw SetupError("no suitable PAGES frame") }
        let (o, pair, _) = try Self.run(.flipByte(.toReceiver, plain: (target.plain.lowerBound + target.plain.upperBound) / 2))
        #expect(o.proxy?.faultFired != nil)
        guard let d = o.destinationError else { Issue.record("destination should fail: \(o.destination)"); return }
        guard case .tls = d.failure else { Issue.record("a corrupted record must be a TLS error, got \(d.failure)"); return }
        #expect(d.phase == .precopy && d.disposition == .rolledBack, "\(d)")
        try Guarantee.rolledBack(o, pair, sourcePhase: [.precopy, .stopcopy, .ready], destinationPhase: [.precopy])
        // Nothing from the corrupted frame reached guest memory.
        let landed = try pair.destinationMemory.readPages(startPFN: target.detail, count: 64)
        #expect(!landed.contains { $0 != 0 }, "pages of the corrupted frame were applied")
    }

    @Test func stalledConnectionIsDetectedByThePeerTimeout() throws {
        let m = try Self.map()
        let end = m.first(5)!.plain.lowerBound
        var options = Rig.senderOptions(peerTimeout: 2)
        options.downtimeTargetMs = 60_000
        let started = ContinuousClock.now
        let (o, pair, _) = try Self.run(.stall(.toReceiver, plain: end / 2), options: options,
                                        receiverOptions: Rig.receiverOptions(peerTimeout: 2))
        let elapsed = (ContinuousClock.now - started).seconds
        #expect(o.proxy?.faultFired != nil)
        #expect(elapsed < 30, "a stalled peer must be detected by the timeouts, took \(elapsed) s")
        try Guarantee.rolledBack(o, pair, sourcePhase: [.precopy, .stopcopy, .ready], destinationPhase: [.precopy])
        for e in [o.sourceError, o.destinationError].compactMap({ $0 }) {
            #expect("\(e)".contains("within 2"), "the error names the timeout: \(e)")
        }
    }
}
