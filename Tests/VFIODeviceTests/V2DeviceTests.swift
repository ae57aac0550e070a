import Foundation
import Glibc
import SystemPackage
import Testing
import CVFIO
@testable import VFIODevice
@testable import VFIOSimulator

/// VFIO-V2.md §7 checklist, rule by rule, against the strict v2 simulator (the
/// rule number is in each test's name; docs/DEVICE.md has the table).
@Suite struct V2DeviceTests {
    // MARK: Rule 1 — detection

    @Test func rule1_probeReportsFlags() throws {
        let sim = v2Sim(flags: [.stopCopy, .preCopy])
        let flags = try VFIOMigrationV2.probe(deviceFD: sim.deviceFD, kernel: sim.kernel, name: "d")
        #expect(flags == [.stopCopy, .preCopy])
        #expect(sim.log.first == "ioctl(dev \(sim.deviceFD), VFIO_DEVICE_FEATURE GET MIGRATION argsz 16 → flags STOP_COPY|PRE_COPY) = 0")
    }

    @Test func rule1_probeENOTTYMeansNoV2AndMissingStopCopyIsRefused() throws {
        let noV2 = VFIOKernel(open: { _, _, _ in 3 }, close: { _ in }, ioctl: { _, _, _ throws(Errno) in throw .inappropriateIOCTLForDevice },
                              pread: { _, _, _ in 0 }, pwrite: { _, _, _ in 0 }, fileSize: { _ in 0 }, truncate: { _, _ in },
                              memfdCreate: { _ in 3 }, mmap: { _, _ throws(Errno) in throw .invalidArgument }, munmap: { _, _ in },
                              madvise: { _, _, _ in }, msync: { _, _ in })
        #expect(try VFIOMigrationV2.probe(deviceFD: 9, kernel: noV2, name: "d") == nil)
        var p2pOnly = noV2
        p2pOnly.ioctl = { _, _, argument throws(Errno) in
            guard case .buffer(let raw) = argument else { throw .invalidArgument }
            raw.storeBytes(of: UInt64(2).littleEndian, toByteOffset: 8, as: UInt64.self)   // P2P without STOP_COPY
            return 0
        }
        let e = v2Error { _ = try VFIOMigrationV2.probe(deviceFD: 9, kernel: p2pOnly, name: "d") }
        #expect(e?.kind == "protocolViolation")
    }

    // MARK: Rule 2 — argument layout, argsz, GET/SET/PROBE

    @Test func rule2_argumentLayoutsMatchTheHeader() {
        // Numbers from VFIO-V2.md §1.1/§1.3 and the installed header.
        #expect(VFIOv2.deviceFeature == 0x3B75 && VFIOv2.deviceFeature == UInt(CVFIO_DEVICE_FEATURE))
        #expect(VFIOv2.deviceReset == 0x3B6F && VFIOv2.migGetPrecopyInfo == 0x3B79)
        #expect(CVFIO_SIZEOF_DEVICE_FEATURE == 8 && CVFIO_SIZEOF_FEATURE_MIGRATION == 8)
        #expect(CVFIO_SIZEOF_FEATURE_MIG_STATE == 8 && CVFIO_OFFSETOF_MIG_STATE_DATA_FD == 4)
        #expect(CVFIO_SIZEOF_DMA_LOGGING_CONTROL == 24 && CVFIO_OFFSETOF_DMA_LOGGING_CONTROL_RANGES == 16)
        #expect(CVFIO_SIZEOF_DMA_LOGGING_RANGE == 16 && CVFIO_SIZEOF_DMA_LOGGING_REPORT == 32)
        #expect(CVFIO_OFFSETOF_DMA_LOGGING_REPORT_BITMAP == 24)
        #expect(VFIOv2.Feature.migration.rawValue == CVFIO_FEATURE_MIGRATION && VFIOv2.Feature.dmaLoggingReport.rawValue == CVFIO_FEATURE_DMA_LOGGING_REPORT)
        #expect(V2State.runningP2P.rawValue == 5 && V2State.preCopyP2P.rawValue == 7 && V2State.stop.rawValue == 1)

        #expect(V2Argument.getMigration().bytes == [16, 0, 0, 0, 0x01, 0x00, 0x01, 0x00] + [UInt8](repeating: 0, count: 8))
        #expect(V2Argument.setState(.preCopy).bytes == [16, 0, 0, 0, 0x02, 0x00, 0x02, 0x00, 6, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF])
        #expect(V2Argument.getState().bytes.prefix(8) == [16, 0, 0, 0, 0x02, 0x00, 0x01, 0x00])
        #expect(V2Argument.getMigDataSize().bytes.prefix(8) == [16, 0, 0, 0, 0x09, 0x00, 0x01, 0x00])
        #expect(V2Argument.precopyInfo().bytes == [24, 0, 0, 0, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 16))
        #expect(V2Argument.probeDMALogging().bytes == [8, 0, 0, 0, 0x06, 0x00, 0x04, 0x00])
        #expect(V2Argument.dmaLoggingStop().bytes == [8, 0, 0, 0, 0x07, 0x00, 0x02, 0x00])
        let start = V2Argument.dmaLoggingStart(pageSize: 4096, rangeCount: 3, rangesAddress: 0x1122_3344_5566_7788)
        #expect(start.count == 32 && start.u32(at: 0) == 32 && start.u32(at: 4) == 0x20006)
        #expect(start.u64(at: 8) == 4096 && start.u32(at: 16) == 3 && start.u32(at: 20) == 0 && start.u64(at: 24) == 0x1122_3344_5566_7788)
        let report = V2Argument.dmaLoggingReport(iova: 0x10000, length: 0x20000, pageSize: 4096, bitmapAddress: 0xAB)
        #expect(report.count == 40 && report.u32(at: 4) == 0x10008)
        #expect(report.u64(at: 8) == 0x10000 && report.u64(at: 16) == 0x20000 && report.u64(at: 24) == 4096 && report.u64(at: 32) == 0xAB)
        #expect(V2Argument.dmaLoggingRanges([(0x1000, 0x2000), (0x8000, 0x1000)]).bytes.count == 32)
    }

    @Test func rule2_argumentsReachTheKernelEightByteAligned() throws {
        var arg = V2Argument.precopyInfo()
        let aligned = arg.withArgument { a -> Bool in
            guard case .buffer(let raw) = a else { return false }
            return UInt(bitPattern: raw.baseAddress) % 8 == 0 && raw.count == 24
        }
        #expect(aligned)
    }

    @Test func rule2_simulatorRejectsWhatTheCoreRejects() {
        let sim = v2Sim()
        var short = V2Argument.getMigration(); short.put(UInt32(7), at: 0)                  // argsz < 8
        #expect(rawFeature(sim, &short) == .invalidArgument)
        var noPayload = V2Argument.getMigration(); noPayload.put(UInt32(12), at: 0)         // payload < 8
        #expect(rawFeature(sim, &noPayload) == .invalidArgument)
        var unknownBit = V2Argument.getMigration(); unknownBit.put(UInt32(0x10001 | 1 << 19), at: 4)
        #expect(rawFeature(sim, &unknownBit) == .invalidArgument)
        var both = V2Argument.getState(); both.put(UInt32(0x30002), at: 4)                  // GET|SET without PROBE
        #expect(rawFeature(sim, &both) == .invalidArgument)
        var setMigration = V2Argument.getMigration(); setMigration.put(UInt32(0x20001), at: 4)   // MIGRATION is GET-only
        #expect(rawFeature(sim, &setMigration) == .invalidArgument)
        var unknownFeature = V2Argument.getMigration(); unknownFeature.put(UInt32(0x10000 | 42), at: 4)
        #expect(rawFeature(sim, &unknownFeature) == .inappropriateIOCTLForDevice)
        var probe = V2Argument.probeDMALogging()
        #expect(rawFeature(sim, &probe) == nil)
        var overlong = V2Argument.getMigration(); overlong.put(UInt32(64), at: 0)           // argsz beyond the buffer
        #expect(rawFeature(sim, &overlong) == .badAddress)
        #expect(sim.currentState == .running)
    }

    // MARK: Rule 3 — one SET, data_fd ownership

    @Test func rule3_oneSetWalksTheCombinationPath() throws {
        let sim = v2Sim()
        let d = try v2Device(sim)
        sim.clearLog()
        try d.setState(.saving)                 // RUNNING → STOP_COPY, one SET
        let sets = sim.log.filter { $0.contains("SET MIG_DEVICE_STATE") }
        #expect(sets.count == 1)
        #expect(sets.first?.contains("[RUNNING→RUNNING_P2P, RUNNING_P2P→STOP, STOP→STOP_COPY]") == true)
        #expect(d.v2?.dataFD != nil)
        try d.setState(.stopped)
        #expect(d.v2?.dataFD == nil && sim.openDataFDs == 0)
    }

    @Test func rule3_precopyToStopCopyKeepsTheDescriptor() throws {
        let sim = v2Sim()
        let d = try v2Device(sim)
        try d.setState([.saving, .running])
        let fd = try #require(d.v2?.dataFD)
        try d.quiesceP2P()
        #expect(sim.currentState == .preCopyP2P && d.v2?.dataFD == fd)
        try d.setState(.saving)
        #expect(sim.currentState == .stopCopy && d.v2?.dataFD == fd)
        #expect(sim.log.contains { $0.contains("SET MIG_DEVICE_STATE STOP_COPY [PRE_COPY_P2P→STOP_COPY]) = 0") })
        try d.setState(.running)   // rollback: STOP_COPY → STOP → RUNNING_P2P → RUNNING
        #expect(sim.currentState == .running && d.v2?.dataFD == nil && sim.openDataFDs == 0)
    }

    @Test func rule3_invalidArcsAndMissingStatesAreEINVAL() throws {
        let sim = v2Sim()
        let d = try v2Device(sim)
        try d.setState(.saving)
        let e = v2Error { try d.v2!.set(.preCopy) }       // STOP_COPY → PRE_COPY is not permitted
        guard case .v2TransitionFailed(_, .stopCopy, .preCopy, .invalidArgument, .stopCopy)? = e else { Issue.record("\(String(describing: e))"); return }
        let plain = v2Sim(flags: .stopCopy)
        let pd = try v2Device(plain)
        let e2 = v2Error { try pd.v2!.set(.preCopy) }    // not offered
        guard case .v2TransitionFailed(_, .running, .preCopy, .invalidArgument, .running)? = e2 else { Issue.record("\(String(describing: e2))"); return }
        #expect(throws: Errno.invalidArgument) { try SimulatedV2Device.nextState(from: .running, to: .runningP2P, flags: .stopCopy) }
        #expect(try SimulatedV2Device.nextState(from: .running, to: .stop, flags: .stopCopy) == .stop)   // RUNNING_P2P skipped
    }

    // MARK: Rule 4 — save: PRE_COPY reads, PRECOPY_INFO, STOP_COPY until 0

    @Test(arguments: [false, true])
    func rule4_precopyEndIsENOMSGOrZeroAndStopCopyEndsAtZero(mtty: Bool) throws {
        let sim = v2Sim(configure: { $0.precopyEndReturnsZero = mtty })
        let d = try v2Device(sim)
        try d.setState([.saving, .running])
        let info0 = try d.v2!.precopyInfo()
        #expect(info0.initial > 0 && info0.dirty == 0)
        var seq = SaveSequence(device: d)
        while try seq.nextChunk() != nil {}
        #expect(sim.log.last?.hasSuffix(mtty ? "= 0" : "= -1 ENOMSG") == true)
        #expect(try d.v2!.precopyInfo().initial == 0)
        sim.workloadStep()
        #expect(try d.v2!.precopyInfo().dirty > 0)
        try d.setState(.saving)
        while try seq.nextChunk() != nil {}
        #expect(sim.log.last?.hasSuffix(") = 0") == true && sim.log.last?.hasPrefix("read(") == true)
        #expect(v2Error { _ = try d.v2!.precopyInfo() }.map { $0.errnoCode } == .invalidArgument)   // outside PRE_COPY
        try d.setState(.stopped)
    }

    @Test func rule4_precopyInfoRules() throws {
        let sim = v2Sim()
        let d = try v2Device(sim)
        #expect(v2Error { _ = try d.v2!.precopyInfo() }.map { $0.errnoCode } == .badFileDescriptor)   // no session
        try d.setState([.saving, .running])
        let fd = try #require(d.v2?.dataFD)
        let k = sim.kernel
        var short = V2Argument.precopyInfo(); short.put(UInt32(16), at: 0)
        #expect(errnoOf { () throws(Errno) in _ = try short.withArgument { (a) throws(Errno) in try k.ioctl(fd, VFIOv2.migGetPrecopyInfo, a) } } == .invalidArgument)
        var other = V2Argument.precopyInfo()
        #expect(errnoOf { () throws(Errno) in _ = try other.withArgument { (a) throws(Errno) in try k.ioctl(fd, 0x3B7F, a) } } == .inappropriateIOCTLForDevice)
    }

    @Test func rule4_dataFDIsAStream() throws {
        let sim = v2Sim()
        let d = try v2Device(sim)
        try d.setState([.saving, .running])
        let fd = try #require(d.v2?.dataFD)
        let k = sim.kernel
        var buf = [UInt8](repeating: 0, count: 16)
        #expect(errnoOf { () throws(Errno) in _ = try buf.withMutableBytes { (b) throws(Errno) in try k.pread(fd, b, 0) } } == .illegalSeek)
        #expect(errnoOf { () throws(Errno) in _ = try buf.withBytes { (b) throws(Errno) in try k.pwrite(fd, b, 0) } } == .illegalSeek)
        #expect(errnoOf { () throws(Errno) in _ = try buf.withBytes { (b) throws(Errno) in try k.write(fd, b) } } == .badFileDescriptor)   // O_RDONLY end
    }

    // MARK: Rule 5 — restore: RESUMING, any segmentation, validation at RESUMING → STOP

    @Test(arguments: [1, 977, 65536])
    func rule5_roundTripInAnySegmentation(piece: Int) throws {
        let src = v2Sim(seed: 11)
        let dst = v2Sim(seed: 99)
        let s = try v2Device(src, name: "s")
        let stream = try v2Save(s, sim: src).flatMap { $0 }
        let t = try v2Device(dst, name: "t")
        try v2Resume(t, stream: stream, piece: piece)
        #expect(dst.currentState == .stop)
        #expect(dst.stateSnapshot() == src.stateSnapshot())
        try t.setState(.running)
        #expect(dst.currentState == .running && dst.openDataFDs == 0)
        try s.setState(.stopped)
        #expect(src.currentState == .stop && src.openDataFDs == 0)
    }

    @Test func rule5_resumingToStopRefusesIncompleteAndCorruptStreams() throws {
        let src = v2Sim(seed: 5)
        let stream = try v2Save(try v2Device(src), sim: src).flatMap { $0 }
        // Incomplete: the last 100 bytes never arrive.
        let dst = v2Sim(seed: 6)
        let t = try v2Device(dst)
        let e = v2Error { try v2Resume(t, stream: Array(stream.dropLast(100)), piece: 4096) }
        guard case .v2TransitionFailed(_, .resuming, .stop, .invalidArgument, .resuming)? = e else { Issue.record("\(String(describing: e))"); return }
        #expect(dst.log.contains { $0.contains("refuses the stream at RESUMING→STOP: stream incomplete") })
        // Abort = reset, then STOP: never RUNNING without COMMIT.
        try t.setState(.stopped)
        #expect(dst.currentState == .stop && dst.resetCount == 1 && dst.openDataFDs == 0)
        // Corrupt: one flipped byte inside a block record.
        let src2 = v2Sim(seed: 5)
        src2.inject(.corruptStream(atByte: 5000))
        let bad = try v2Save(try v2Device(src2), sim: src2).flatMap { $0 }
        let dst2 = v2Sim(seed: 7, configure: { $0.refusedStreamLandsInError = true })
        let t2 = try v2Device(dst2)
        let e2 = v2Error { try v2Resume(t2, stream: bad, piece: 4096) }
        guard case .v2TransitionFailed(_, .resuming, .stop, .invalidArgument, .error)? = e2 else { Issue.record("\(String(describing: e2))"); return }
        try t2.setState(.stopped)
        #expect(dst2.currentState == .stop && dst2.resetCount == 1)
    }

    @Test func rule5_badHeaderIsRefusedAtWrite() throws {
        let dst = v2Sim()
        let t = try v2Device(dst)
        try t.setState(.resuming)
        var seq = ResumeSequence(device: t)
        let e = v2Error { try seq.apply(Array("this is not a VSV2 stream header".utf8)) }
        guard case .v2DataStream(_, "write", .resuming, .invalidArgument)? = e else { Issue.record("\(String(describing: e))"); return }
    }

    // MARK: Rule 6 — ERROR, reset

    @Test func rule6_errorIsLeftOnlyByReset() throws {
        let sim = v2Sim()
        let d = try v2Device(sim)
        sim.inject(.failArc(from: .preCopy, to: .preCopyP2P, errno: .ioError, landIn: .error))
        try d.setState([.saving, .running])
        let e = v2Error { try d.quiesceP2P() }
        guard case .v2TransitionFailed(_, .preCopy, .preCopyP2P, .ioError, .error)? = e else { Issue.record("\(String(describing: e))"); return }
        #expect(d.v2?.dataFD == nil)                                    // the session is gone with ERROR
        for target in V2State.allCases where target != .error {
            let e = v2Error { try d.v2!.set(target) }
            #expect(e?.errnoCode == .invalidArgument, "ERROR → \(target) must be refused")
        }
        #expect(sim.currentState == .error)
        try d.v2!.reset()
        #expect(sim.currentState == .running)
    }

    @Test func rule6_sourceRollbackFromErrorResetsAndSaysTheStateIsLost() throws {
        let sim = v2Sim()
        let d = try v2Device(sim)
        try d.setState([.saving, .running])
        try d.setState(.saving)
        sim.inject(.failArc(from: .stopCopy, to: .stop, errno: .ioError, landIn: .error))
        let e = v2Error { try d.setState(.running) }
        guard case .v2RecoveredByReset(_, .stopCopy, .ioError)? = e else { Issue.record("\(String(describing: e))"); return }
        #expect(sim.currentState == .running && sim.resetCount == 1 && sim.openDataFDs == 0)
    }

    @Test func rule6_resetInvalidatesAnOpenDataFD() throws {
        let sim = v2Sim()
        let d = try v2Device(sim)
        try d.setState([.saving, .running])
        let fd = try #require(d.v2?.dataFD)
        let k = sim.kernel
        try k.ioctl(sim.deviceFD, VFIOv2.deviceReset, .none)     // behind the device's back
        var buf = [UInt8](repeating: 0, count: 64)
        #expect(errnoOf { () throws(Errno) in _ = try buf.withMutableBytes { (b) throws(Errno) in try k.read(fd, b) } } == .operationNotSupportedByDevice)
        #expect(sim.currentState == .running)
    }

    @Test func rule6_failedArcMidPathLandsOnThePath() throws {
        let sim = v2Sim()
        let d = try v2Device(sim)
        sim.inject(.failArc(from: .runningP2P, to: .stop))
        let e = v2Error { try d.setState(.saving) }   // RUNNING → RUNNING_P2P → (fails) STOP → STOP_COPY
        guard case .v2TransitionFailed(_, .running, .stopCopy, .ioError, .runningP2P)? = e else { Issue.record("\(String(describing: e))"); return }
        try d.setState(.running)
        #expect(sim.currentState == .running)
    }

    // MARK: Rule 7 — P2P before stop

    @Test func rule7_quiesceOnlyWithP2P() throws {
        let withP2P = v2Sim(flags: [.stopCopy, .p2p])
        let a = try v2Device(withP2P)
        try a.setState([.saving, .running])   // no PRE_COPY: stays RUNNING
        #expect(withP2P.currentState == .running && a.v2?.dataFD == nil)
        try a.quiesceP2P()
        #expect(withP2P.currentState == .runningP2P)
        try a.setState(.saving)               // RUNNING_P2P → STOP → STOP_COPY, a new fd
        #expect(withP2P.currentState == .stopCopy && a.v2?.dataFD != nil)
        let without = v2Sim(flags: [.stopCopy, .preCopy])
        let b = try v2Device(without)
        try b.setState([.saving, .running])
        try b.quiesceP2P()
        #expect(without.currentState == .preCopy)
    }

    // MARK: Rule 8 — size estimates

    @Test func rule8_sizeEstimates() throws {
        let sim = v2Sim(flags: .stopCopy)
        let d = try v2Device(sim)
        let full = try #require(try d.v2!.stopCopyLength())
        #expect(full >= UInt64(sim.configuration.stateSize))
        #expect(try d.pendingBytes() == full)                  // no PRE_COPY: MIG_DATA_SIZE
        let old = v2Sim(flags: .stopCopy, configure: { $0.offersDataSize = false })
        let o = try v2Device(old)
        #expect(try o.v2!.stopCopyLength() == nil && (try o.pendingBytes()) == 0)
        let pre = v2Sim()
        let p = try v2Device(pre)
        try p.setState([.saving, .running])
        let info = try p.v2!.precopyInfo()
        #expect(try p.pendingBytes() == info.initial + info.dirty)   // QEMU's estimate, not MIG_DATA_SIZE
    }

    // MARK: Rule 9 — device DMA logging

    @Test func rule9_dmaLoggingReportsAndClearsAndStops() throws {
        let memory = try GuestMemory(anonymousNamed: "g", size: 256 * 4096, pageSize: 4096)
        let sim = v2Sim(memory: memory)
        let d = try v2Device(sim)
        #expect(try DeviceDMALogDirtyPageSource.isSupported(by: d.v2!))
        let source = DeviceDMALogDirtyPageSource(device: d.v2!, guestBytes: 256 * 4096)
        try source.start()
        #expect(sim.dmaLoggingActive && source.loggingPageSize == 4096)
        sim.simulateDMA(toPages: [0, 1, 2, 77, 200])
        let segments = try source.query(startPFN: 0, pageSize: 4096, totalPFNs: 256)
        #expect(segments.flatMap { Array($0.dirtyRuns) } == [PFNRun(startPFN: 0, count: 3), PFNRun(startPFN: 77, count: 1), PFNRun(startPFN: 200, count: 1)])
        #expect(try source.query(startPFN: 0, pageSize: 4096, totalPFNs: 256).first?.pages == DirtyPages.none)   // read and cleared
        sim.simulateDMA(toPages: [130])
        let window = try source.query(startPFN: 128, pageSize: 4096, totalPFNs: 64)
        #expect(window.flatMap { Array($0.dirtyRuns) } == [PFNRun(startPFN: 130, count: 1)])
        try source.stop()
        #expect(!sim.dmaLoggingActive && sim.dmaLoggingStopCount == 1)
        try source.stop()                      // idempotent: one STOP per START
        #expect(sim.dmaLoggingStopCount == 1)
    }

    @Test func rule9_dmaLoggingStartValidationAndFailures() throws {
        let memory = try GuestMemory(anonymousNamed: "g", size: 64 * 4096, pageSize: 4096)
        let sim = v2Sim(memory: memory)
        func start(_ ranges: [(UInt64, UInt64)], pageSize: UInt64 = 4096, count: UInt32? = nil) -> Errno? {
            var table = V2Argument.dmaLoggingRanges(ranges.map { (iova: $0.0, length: $0.1) })
            return table.withArgument { t -> Errno? in
                guard case .buffer(let r) = t else { return Errno(rawValue: -1) }   // never: a table is a buffer
                var arg = V2Argument.dmaLoggingStart(pageSize: pageSize, rangeCount: count ?? UInt32(ranges.count),
                                                     rangesAddress: UInt64(UInt(bitPattern: r.baseAddress)))
                return rawFeature(sim, &arg)
            }
        }
        #expect(start([]) == .invalidArgument)                                     // no range
        #expect(start([(0, 4096)], count: 257) == .argListTooLong)                 // more than a page of ranges
        #expect(start([(100, 4096)]) == .invalidArgument)                          // unaligned
        #expect(start([(0, 8192), (4096, 4096)]) == .invalidArgument)              // overlap
        #expect(start([(UInt64.max - 4095, 8192)]) == .overflow)
        var report = V2Argument.dmaLoggingReport(iova: 0, length: 4096, pageSize: 4096, bitmapAddress: 0)
        #expect(rawFeature(sim, &report) == .invalidArgument)                      // not started
        #expect(start([(0, 64 * 4096)]) == nil)
        #expect(start([(0, 4096)]) == .resourceBusy)                             // one START until STOP
        // A failed REPORT means "consider all memory dirty".
        let d = try v2Device(sim)
        let source = DeviceDMALogDirtyPageSource(device: d.v2!, guestBytes: 64 * 4096)
        sim.inject(.failReport)
        #expect(try source.query(startPFN: 0, pageSize: 4096, totalPFNs: 64).first?.pages == DirtyPages.all)
        #expect(source.reportFailures == 1)
        let noLog = v2Sim(configure: { $0.dmaLogging = false })
        #expect(try DeviceDMALogDirtyPageSource.isSupported(by: try v2Device(noLog).v2!) == false)
    }

    // MARK: Discovery

    @Test func discoveryProbesV2FirstAndHonoursAForcedInterface() throws {
        let sim = v2Sim(flags: [.stopCopy, .p2p])
        let kernel = discoveryKernel(deviceFD: sim.deviceFD, simulated: sim.kernel)
        guard case .v2(let handle) = try VFIODiscovery.openMigratable(group: "42", device: "0000:01:00.0", kernel: kernel) else {
            Issue.record("expected a v2 device"); return
        }
        #expect(handle.flags == [.stopCopy, .p2p])
        let device = try handle.migrationDevice(name: "nic0")
        #expect(device.interface == .v2([.stopCopy, .p2p]) && device.interface.helloPrefix == "vfio-v2[STOP_COPY|P2P];")
        // Forcing v1 skips the probe and goes to the region scan (none here: no regions).
        let e = v2Error { _ = try VFIODiscovery.openMigratable(group: "42", device: "0000:01:00.0", interface: .v1, kernel: kernel) }
        #expect(e?.kind == "noMigrationRegion")
        // Forcing v2 on a device without it says so.
        let plain = discoveryKernel(deviceFD: 77, simulated: .live)
        let e2 = v2Error { _ = try VFIODiscovery.openMigratable(group: "42", device: "0000:01:00.0", interface: .v2, kernel: plain) }
        #expect(e2?.kind == "wrongInterface")
        #expect(MigrationDevice(name: "r", region: NoMigrationRegion(device: "x")).interface.helloPrefix == "")
    }

    /// `--device NAME=fd:N` on a v2 device: GET MIGRATION on the adopted descriptor, nothing opened.
    @Test func anAdoptedDeviceDescriptorIsProbedForV2() throws {
        let sim = v2Sim(flags: [.stopCopy, .preCopy])
        guard case .v2(let handle) = try VFIODiscovery.adopt(deviceFD: sim.deviceFD, name: "nic0", kernel: sim.kernel) else {
            Issue.record("expected a v2 device"); return
        }
        #expect(handle.flags == [.stopCopy, .preCopy] && handle.groupFD == -1 && handle.containerFD == -1)
        #expect(try handle.migrationDevice(name: "nic0").interface == .v2([.stopCopy, .preCopy]))
    }

    /// A played kernel for discovery: container and group answered here, the device's
    /// ioctls handed to `simulated` (ENOTTY from the live kernel for a non-VFIO fd).
    private func discoveryKernel(deviceFD: Int32, simulated: VFIOKernel) -> VFIOKernel {
        var k = simulated
        k.open = { path, _, _ in path.hasSuffix("vfio") ? 1000 : 1001 }
        k.close = { fd throws(Errno) in if fd != 1000 && fd != 1001 && fd != deviceFD { try simulated.close(fd) } }
        k.ioctl = { fd, request, argument throws(Errno) in
            switch request {
            case UInt(CVFIO_GET_API_VERSION): return Int32(CVFIO_API_VERSION)
            case UInt(CVFIO_CHECK_EXTENSION): return 1
            case UInt(CVFIO_SET_IOMMU), UInt(CVFIO_GROUP_SET_CONTAINER): return 0
            case UInt(CVFIO_GROUP_GET_STATUS):
                if case .buffer(let raw) = argument { raw.storeBytes(of: CVFIO_GROUP_FLAGS_VIABLE, toByteOffset: 4, as: UInt32.self) }
                return 0
            case UInt(CVFIO_GROUP_GET_DEVICE_FD): return deviceFD
            case UInt(CVFIO_DEVICE_GET_INFO): return 0   // num_regions 0
            default:
                if fd == deviceFD && deviceFD == 77 { throw .inappropriateIOCTLForDevice }
                return try simulated.ioctl(fd, request, argument)
            }
        }
        return k
    }
}
