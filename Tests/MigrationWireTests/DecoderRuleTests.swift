import Testing
@testable import MigrationWire

private let sha0 = [UInt8](repeating: 0, count: 32)
private func raw(_ bytes: [UInt8], phase: Phase = .precopy) -> FrameBody {
    .deviceData(DeviceData(phase: phase, encoding: .raw, originalLength: UInt32(bytes.count), payload: bytes))
}

/// Each rule of the decoder, with the exact error it must report.
@Suite struct HeaderRuleTests {
    @Test func oversizedPayloadIsRejectedFromTheHeaderAlone() throws {
        var s = StreamBuilder.source()
        s.bytes += rawFrame(type: FrameType.deviceData.rawValue, sequence: 1, payload: [], length: 0xFFFF_FFF0)
        var decoder = FrameDecoder(peer: .source, limits: WireLimits(maxPayload: 1 << 20))
        decoder.feed(s.bytes)  // header only: no payload bytes follow
        _ = try decoder.next()
        #expect(throws: WireError.payloadTooLarge(frame: .deviceData, declared: 0xFFFF_FFF0, limit: 1 << 20)) { try decoder.next() }
    }

    @Test func unknownFrameTypeIsRejected() {
        var s = StreamBuilder.source()
        s.bytes += rawFrame(type: 99, sequence: 1, payload: [])
        #expect(throws: WireError.unknownFrameType(99)) { try decodeAll(s.bytes) }
        #expect(throws: WireError.unknownFrameType(0)) { try decodeAll([UInt8](FrameHeader.magic) + [UInt8](repeating: 0, count: 20)) }
    }

    @Test func unknownFlagsAreRejected() {
        var s = StreamBuilder.source()
        s.bytes += rawFrame(type: FrameType.keepAlive.rawValue, flags: 0x8000, sequence: 1, payload: [])
        #expect(throws: WireError.unknownFlags(frame: .keepAlive, flags: 0x8000)) { try decodeAll(s.bytes) }
    }

    @Test func frameWithoutTheMagicIsRejected() {
        var bytes = StreamBuilder.source().bytes
        bytes[0] = 0x00
        #expect(throws: WireError.badFrameMagic(found: 0x4749_4D00)) { try decodeAll(bytes) }
    }

    @Test func sequenceGapsAndReplaysAreRejected() {
        var s = StreamBuilder.source()
        s.add(.keepAlive)
        let gap = s.bytes + FrameEncoder.serialize(.keepAlive, device: 0, sequence: 3)
        #expect(throws: WireError.sequenceGap(expected: 2, got: 3)) { try decodeAll(gap) }
        let duplicate = s.bytes + FrameEncoder.serialize(.keepAlive, device: 0, sequence: 1)
        #expect(throws: WireError.sequenceReplay(expected: 2, got: 1)) { try decodeAll(duplicate) }
        // Reordered: frames 2 and 1 swapped after HELLO.
        let reordered = StreamBuilder.source().bytes + FrameEncoder.serialize(.keepAlive, device: 0, sequence: 2)
            + FrameEncoder.serialize(.keepAlive, device: 0, sequence: 1)
        #expect(throws: WireError.sequenceGap(expected: 1, got: 2)) { try decodeAll(reordered) }
        let firstNotZero = FrameEncoder.serialize(.hello(testHello()), device: 0, sequence: 1)
        #expect(throws: WireError.sequenceGap(expected: 0, got: 1)) { try decodeAll(firstNotZero) }
    }

    @Test func truncatedHeaderAndPayloadAtEndOfStream() throws {
        var s = StreamBuilder.source()
        s.add(raw([1, 2, 3, 4]), device: 0)
        let whole = s.bytes
        let cutInHeader = Array(whole.dropLast(4 + 8 + 10))   // 14 of the last frame's 24 header bytes
        #expect(throws: WireError.truncatedHeader(bufferedBytes: 14)) { try decodeAll(cutInHeader) }
        let cutInPayload = Array(whole.dropLast(3))           // 8-byte prefix + 4 data bytes, 3 missing
        #expect(throws: WireError.truncatedPayload(frame: .deviceData, declared: 12, buffered: 9)) { try decodeAll(cutInPayload) }

        var decoder = FrameDecoder(peer: .source)
        decoder.feed(cutInPayload)
        while try decoder.next() != nil {}
        #expect(decoder.bufferedByteCount == 24 + 9)
    }

    @Test func aDecoderStaysFailedAfterItsFirstError() throws {
        var decoder = FrameDecoder(peer: .source)
        decoder.feed(FrameEncoder.serialize(.keepAlive, device: 0, sequence: 0))
        #expect(throws: WireError.unexpectedFrame(type: .keepAlive, state: .awaitingHello)) { try decoder.next() }
        decoder.feed(StreamBuilder.source().bytes)
        #expect(throws: WireError.unexpectedFrame(type: .keepAlive, state: .awaitingHello)) { try decoder.next() }
    }
}

@Suite struct StateRuleTests {
    @Test func firstFrameMustBeHello() {
        let bytes = FrameEncoder.serialize(raw([1]), device: 0, sequence: 0)
        #expect(throws: WireError.unexpectedFrame(type: .deviceData, state: .awaitingHello)) { try decodeAll(bytes) }
    }

    @Test func secondHelloIsRejected() {
        var s = StreamBuilder.source()
        s.add(.hello(testHello()))
        #expect(throws: WireError.unexpectedFrame(type: .hello, state: .established)) { try decodeAll(s.bytes) }
    }

    @Test func helloRoleMustBeThePeers() {
        let bytes = StreamBuilder.destination().bytes
        #expect(throws: WireError.unexpectedRole(expected: .source, got: .destination)) { try decodeAll(bytes, peer: .source) }
    }

    @Test func framesOfThePeersRoleAreRejected() {
        var s = StreamBuilder.source()
        s.add(.ready)
        #expect(throws: WireError.wrongRole(frame: .ready, sender: .source)) { try decodeAll(s.bytes) }
        var d = StreamBuilder.destination()
        d.add(raw([1]), device: 0)
        #expect(throws: WireError.wrongRole(frame: .deviceData, sender: .destination)) { try decodeAll(d.bytes, peer: .destination) }
        var c = StreamBuilder.destination()
        c.add(.commit)
        #expect(throws: WireError.wrongRole(frame: .commit, sender: .destination)) { try decodeAll(c.bytes, peer: .destination) }
    }

    @Test func onlyCommitAbortKeepAliveAfterComplete() throws {
        var s = StreamBuilder.source(devices: 1)
        s.finishDevices(1)
        s.add(.keepAlive)
        var late = s
        late.add(.pages(Pages(pageSize: 4096, segments: [PageSegment(startPFN: 0, pageCount: 1, encoding: .zero, payload: [])])))
        #expect(throws: WireError.unexpectedFrame(type: .pages, state: .complete)) { try decodeAll(late.bytes) }
        var again = s
        again.add(.complete)
        #expect(throws: WireError.unexpectedFrame(type: .complete, state: .complete)) { try decodeAll(again.bytes) }
        var ok = s
        ok.add(.commit)
        ok.add(.keepAlive)
        ok.add(.abort(Abort(reason: .timeout, message: "no RESUMED")))
        #expect(try decodeAll(ok.bytes).count == ok.frames.count)
        var twice = s
        twice.add(.commit)
        twice.add(.commit)
        #expect(throws: WireError.unexpectedFrame(type: .commit, state: .committed)) { try decodeAll(twice.bytes) }
    }

    /// §5.5/§6: ITERATION_END is informational. A stream may end stop-and-copy without
    /// one (the reference source) or with one (as the §7 diagram once drew it).
    @Test func iterationEndIsOptionalAfterStopAndCopy() throws {
        for withFinalIterationEnd in [false, true] {
            var s = StreamBuilder.source(devices: 1)
            s.add(.iterationEnd(IterationEnd(iteration: 0, pendingBytes: 8, dirtyPages: 0)))
            s.add(raw([1, 2, 3], phase: .stopcopy), device: 0)
            if withFinalIterationEnd { s.add(.iterationEnd(IterationEnd(iteration: 1, pendingBytes: 0, dirtyPages: 0))) }
            s.finishDevices(1)
            #expect(try decodeAll(s.bytes).count == s.frames.count)
        }
    }

    /// §5.3: T = 0 reports nothing; its start is not checked against memory.
    @Test func dirtyBitmapWithZeroPFNsIsAnEmptyReport() throws {
        for copied in [DirtyCopied.none, .all, .bitmap([])] {
            var s = StreamBuilder.source(devices: 1)
            s.add(.dirtyBitmap(DirtyBitmap(startPFN: 1 << 40, pageSize: 4096, totalPFNs: 0, copied: copied)), device: 0)
            #expect(try decodeAll(s.bytes).count == s.frames.count)
        }
        var s = StreamBuilder.source(devices: 1)
        s.add(.dirtyBitmap(DirtyBitmap(startPFN: 0, pageSize: 4096, totalPFNs: 0, copied: .bitmap([0]))), device: 0)
        #expect(throws: WireError.bitmapLengthMismatch(totalPFNs: 0, expected: 0, actual: 1)) { try decodeAll(s.bytes) }
    }

    /// §5.3: PAGES need no DIRTY_BITMAP announcing them (iteration 0 sends all memory).
    @Test func pagesWithoutAnyBitmapAreAccepted() throws {
        var s = StreamBuilder.source(devices: 1)
        s.add(.pages(Pages(pageSize: 4096, segments: [PageSegment(startPFN: 3, pageCount: 2, encoding: .zero, payload: [])])))
        #expect(try decodeAll(s.bytes).count == s.frames.count)
    }

    @Test func commitBeforeCompleteIsRejected() {
        var s = StreamBuilder.source()
        s.add(.commit)
        #expect(throws: WireError.unexpectedFrame(type: .commit, state: .established)) { try decodeAll(s.bytes) }
    }

    @Test func nothingIsAcceptedAfterAbort() {
        var s = StreamBuilder.source()
        s.add(.abort(Abort(reason: .cancelled, message: "SIGINT")))
        s.add(.keepAlive)
        #expect(throws: WireError.unexpectedFrame(type: .keepAlive, state: .aborted)) { try decodeAll(s.bytes) }
    }

    @Test func destinationFramesMustComeInTheirOrder() throws {
        var early = StreamBuilder.destination()
        early.add(.resumed)
        #expect(throws: WireError.unexpectedFrame(type: .resumed, state: .established)) { try decodeAll(early.bytes, peer: .destination) }
        var twice = StreamBuilder.destination()
        twice.add(.ready)
        twice.add(.ready)
        #expect(throws: WireError.unexpectedFrame(type: .ready, state: .ready)) { try decodeAll(twice.bytes, peer: .destination) }
        var after = StreamBuilder.destination()
        after.add(.ready)
        after.add(.resumed)
        after.add(.abort(Abort(reason: .deviceError, message: "x")))
        #expect(throws: WireError.unexpectedFrame(type: .abort, state: .resumed)) { try decodeAll(after.bytes, peer: .destination) }
    }

    @Test func deviceIndexMustNameAnAnnouncedDevice() {
        var out = StreamBuilder.source(devices: 2)
        out.add(raw([1]), device: 2)
        #expect(throws: WireError.deviceIndexOutOfRange(frame: .deviceData, index: 2, deviceCount: 2)) { try decodeAll(out.bytes) }
        var nonDevice = StreamBuilder.source(devices: 2)
        nonDevice.add(.keepAlive, device: 1)
        #expect(throws: WireError.unexpectedDeviceIndex(frame: .keepAlive, index: 1)) { try decodeAll(nonDevice.bytes) }
        var afterEnd = StreamBuilder.source(devices: 2)
        afterEnd.add(.deviceEnd(DeviceEnd(totalBytes: 0, chunkCount: 0, sha256: sha0)), device: 1)
        afterEnd.add(raw([1], phase: .stopcopy), device: 1)
        #expect(throws: WireError.dataAfterDeviceEnd(frame: .deviceData, device: 1)) { try decodeAll(afterEnd.bytes) }
        var endTwice = StreamBuilder.source(devices: 2)
        endTwice.add(.deviceEnd(DeviceEnd(totalBytes: 0, chunkCount: 0, sha256: sha0)), device: 0)
        endTwice.add(.deviceEnd(DeviceEnd(totalBytes: 0, chunkCount: 0, sha256: sha0)), device: 0)
        #expect(throws: WireError.dataAfterDeviceEnd(frame: .deviceEnd, device: 0)) { try decodeAll(endTwice.bytes) }
        var early = StreamBuilder.source(devices: 2)
        early.add(.deviceEnd(DeviceEnd(totalBytes: 0, chunkCount: 0, sha256: sha0)), device: 0)
        early.add(.complete)
        #expect(throws: WireError.completeBeforeDeviceEnd(device: 1)) { try decodeAll(early.bytes) }
    }

    @Test func precopyAfterStopCopyIsAPhaseRegression() {
        var s = StreamBuilder.source()
        s.add(raw([1], phase: .stopcopy), device: 1)
        s.add(raw([2], phase: .precopy), device: 0)  // another device: fine
        s.add(raw([3], phase: .precopy), device: 1)
        #expect(throws: WireError.phaseRegression(device: 1)) { try decodeAll(s.bytes) }
    }

    @Test func deflateMustBeAnnouncedBeforeItIsUsed() {
        var s = StreamBuilder.source(encodings: [.raw])
        s.add(.deviceData(DeviceData(phase: .precopy, encoding: .deflate, originalLength: 4, payload: [3, 0])), device: 0)
        #expect(throws: WireError.encodingNotAnnounced(frame: .deviceData, encoding: "deflate")) { try decodeAll(s.bytes) }
        var p = StreamBuilder.source(encodings: [])
        p.add(.pages(Pages(pageSize: 4096, segments: [PageSegment(startPFN: 0, pageCount: 1, encoding: .deflate, payload: [3, 0])])))
        #expect(throws: WireError.encodingNotAnnounced(frame: .pages, encoding: "deflate")) { try decodeAll(p.bytes) }
    }
}

@Suite struct PayloadRuleTests {
    @Test func helloMagicVersionAndEncodings() {
        var payload = payloadBytes(.hello(testHello()))
        payload[8] = 2  // version 2
        #expect(throws: WireError.unsupportedVersion(2, supported: 1)) {
            try decodeAll(rawFrame(type: 1, sequence: 0, payload: payload))
        }
        var magic = payloadBytes(.hello(testHello()))
        magic[0] = UInt8(ascii: "X")
        #expect(throws: WireError.badHelloMagic(found: Array("XFIO-MIG".utf8))) { try decodeAll(rawFrame(type: 1, sequence: 0, payload: magic)) }
        var encoding = payloadBytes(.hello(testHello()))
        encoding[28] = 7  // first encoding
        #expect(throws: WireError.unknownEncoding(frame: .hello, value: 7)) { try decodeAll(rawFrame(type: 1, sequence: 0, payload: encoding)) }
        var role = payloadBytes(.hello(testHello()))
        role[10] = 3
        #expect(throws: WireError.invalidValue(frame: .hello, field: "role", value: 3)) { try decodeAll(rawFrame(type: 1, sequence: 0, payload: role)) }
    }

    @Test func helloCountsAreCheckedBeforeAllocating() {
        // Device count field sits after magic(8) version(2) role(1) E(1) session(16) encodings(E=2).
        var many = payloadBytes(.hello(testHello()))
        many[30] = 0xFF; many[31] = 0xFF
        #expect(throws: WireError.tooManyDevices(declared: 65535, limit: 64)) { try decodeAll(rawFrame(type: 1, sequence: 0, payload: many)) }
        var bigRanges = payloadBytes(.hello(testHello(devices: 0, memory: [])))
        bigRanges.replaceSubrange((bigRanges.count - 4)..., with: [0xFF, 0xFF, 0xFF, 0xFF])
        #expect(throws: WireError.countExceedsPayload(frame: .hello, field: "memory range count", count: 0xFFFF_FFFF, remainingBytes: 0)) {
            try decodeAll(rawFrame(type: 1, sequence: 0, payload: bigRanges))
        }
        let cut = Array(payloadBytes(.hello(testHello())).prefix(20))
        #expect(throws: WireError.truncated(frame: .hello, field: "session id")) { try decodeAll(rawFrame(type: 1, sequence: 0, payload: cut)) }
    }

    @Test func helloStringsMustBeUTF8() {
        var payload = payloadBytes(.hello(testHello()))
        payload[34] = 0xFF  // first byte of device 0's name ("dev0" after its u16 length at 32)
        #expect(throws: WireError.invalidUTF8(frame: .hello, field: "device name")) { try decodeAll(rawFrame(type: 1, sequence: 0, payload: payload)) }
    }

    @Test func unknownDeviceDataEncodingAndPhase() {
        var s = StreamBuilder.source()
        var payload = payloadBytes(raw([1, 2]))
        payload[1] = 6  // 3, 4 and 5 are known but refused here (PageCopyRuleTests, DeviceDigestTests)
        s.bytes += rawFrame(type: 2, sequence: 1, payload: payload)
        #expect(throws: WireError.unknownEncoding(frame: .deviceData, value: 6)) { try decodeAll(s.bytes) }
        var t = StreamBuilder.source()
        var phase = payloadBytes(raw([1, 2]))
        phase[0] = 9
        t.bytes += rawFrame(type: 2, sequence: 1, payload: phase)
        #expect(throws: WireError.invalidValue(frame: .deviceData, field: "phase", value: 9)) { try decodeAll(t.bytes) }
    }

    @Test func rawDeviceDataMustMatchItsOriginalLength() {
        var s = StreamBuilder.source()
        s.add(.deviceData(DeviceData(phase: .precopy, encoding: .raw, originalLength: 10, payload: [1, 2, 3])), device: 0)
        #expect(throws: WireError.payloadSizeMismatch(frame: .deviceData, field: "raw data", expected: 10, actual: 3)) { try decodeAll(s.bytes) }
    }

    @Test func declaredInflatedLengthAboveTheLimit() {
        var s = StreamBuilder.source()
        s.add(.deviceData(DeviceData(phase: .precopy, encoding: .deflate, originalLength: 0xFFFF_FFFF, payload: [3, 0])), device: 0)
        #expect(throws: WireError.inflatedTooLarge(frame: .deviceData, declared: 0xFFFF_FFFF, limit: 16 << 20)) { try decodeAll(s.bytes) }
        var p = StreamBuilder.source(memory: [])
        p.add(.pages(Pages(pageSize: 4096, segments: [PageSegment(startPFN: 0, pageCount: 8192, encoding: .deflate, payload: [3, 0])])))
        #expect(throws: WireError.inflatedTooLarge(frame: .pages, declared: 8192 * 4096, limit: 16 << 20)) { try decodeAll(p.bytes) }
    }

    @Test func bitmapMustBeExactlyCeilTotalOver8() throws {
        var ok = StreamBuilder.source()
        ok.add(.dirtyBitmap(DirtyBitmap(startPFN: 0, pageSize: 4096, totalPFNs: 17, copied: .bitmap([0xFF, 0xFF, 0x01]))), device: 0)
        #expect(try decodeAll(ok.bytes).count == 2)
        for wrong in [2, 4] {
            var s = StreamBuilder.source()
            s.add(.dirtyBitmap(DirtyBitmap(startPFN: 0, pageSize: 4096, totalPFNs: 17, copied: .bitmap([UInt8](repeating: 0, count: wrong)))), device: 0)
            #expect(throws: WireError.bitmapLengthMismatch(totalPFNs: 17, expected: 3, actual: wrong)) { try decodeAll(s.bytes) }
        }
        var none = StreamBuilder.source()
        var payload = payloadBytes(.dirtyBitmap(DirtyBitmap(startPFN: 0, pageSize: 4096, totalPFNs: 8, copied: .none)))
        payload.append(0)
        none.bytes += rawFrame(type: 3, sequence: 1, payload: payload)
        #expect(throws: WireError.trailingBytes(frame: .dirtyBitmap, count: 1)) { try decodeAll(none.bytes) }
    }

    @Test func pfnsMustLieInAnnouncedMemory() throws {
        // 4 KiB range is PFN 0..<1024; 2 MiB range is 0x100000..<0x100010.
        var edge = StreamBuilder.source()
        edge.add(.dirtyBitmap(DirtyBitmap(startPFN: 1000, pageSize: 4096, totalPFNs: 24, copied: .all)), device: 0)
        #expect(try decodeAll(edge.bytes).count == 2)

        var over = StreamBuilder.source()
        over.add(.dirtyBitmap(DirtyBitmap(startPFN: 1000, pageSize: 4096, totalPFNs: 25, copied: .all)), device: 0)
        #expect(throws: WireError.pfnOutsideMemory(frame: .dirtyBitmap, startPFN: 1000, count: 25)) { try decodeAll(over.bytes) }

        var pages = StreamBuilder.source()
        pages.add(.pages(Pages(pageSize: 4096, segments: [PageSegment(startPFN: 5000, pageCount: 1, encoding: .zero, payload: [])])))
        #expect(throws: WireError.pfnOutsideMemory(frame: .pages, startPFN: 5000, count: 1)) { try decodeAll(pages.bytes) }

        var size = StreamBuilder.source()
        size.add(.pages(Pages(pageSize: 4096, segments: [PageSegment(startPFN: 0x10_0000, pageCount: 1, encoding: .zero, payload: [])])))
        #expect(throws: WireError.pageSizeMismatch(frame: .pages, pfn: 0x10_0000, declared: 4096, announced: 2 << 20)) { try decodeAll(size.bytes) }

        var wrap = StreamBuilder.source()
        wrap.add(.dirtyBitmap(DirtyBitmap(startPFN: UInt64.max - 1, pageSize: 4096, totalPFNs: 8, copied: .all)), device: 0)
        #expect(throws: WireError.pfnOutsideMemory(frame: .dirtyBitmap, startPFN: UInt64.max - 1, count: 8)) { try decodeAll(wrap.bytes) }
    }

    @Test func malformedPagesFramesAreRejected() throws {
        var unknown = StreamBuilder.source()
        var payload = payloadBytes(.pages(Pages(pageSize: 4096, segments: [PageSegment(startPFN: 0, pageCount: 1, encoding: .zero, payload: [])])))
        payload[8 + 12] = 6  // 4 is version 4's zstd lane, 5 version 6's copy (refused unless announced: ZstdLaneTests, PageCopyRuleTests)
        unknown.bytes += rawFrame(type: 4, sequence: 1, payload: payload)
        #expect(throws: WireError.unknownEncoding(frame: .pages, value: 6)) { try decodeAll(unknown.bytes) }

        var count = StreamBuilder.source()
        var many = payloadBytes(.pages(Pages(pageSize: 4096, segments: [])))
        many[4] = 0xFF; many[5] = 0xFF; many[6] = 0xFF
        count.bytes += rawFrame(type: 4, sequence: 1, payload: many)
        #expect(throws: WireError.countExceedsPayload(frame: .pages, field: "segment count", count: 0xFF_FFFF, remainingBytes: 0)) { try decodeAll(count.bytes) }

        var rawSize = StreamBuilder.source()
        rawSize.add(.pages(Pages(pageSize: 4096, segments: [PageSegment(startPFN: 0, pageCount: 2, encoding: .raw, payload: [UInt8](repeating: 1, count: 4096))])))
        #expect(throws: WireError.payloadSizeMismatch(frame: .pages, field: "raw segment payload", expected: 8192, actual: 4096)) { try decodeAll(rawSize.bytes) }

        var zeroData = StreamBuilder.source()
        zeroData.add(.pages(Pages(pageSize: 4096, segments: [PageSegment(startPFN: 0, pageCount: 1, encoding: .zero, payload: [1])])))
        #expect(throws: WireError.payloadSizeMismatch(frame: .pages, field: "zero segment payload", expected: 0, actual: 1)) { try decodeAll(zeroData.bytes) }

        var pageSize = StreamBuilder.source()
        pageSize.add(.pages(Pages(pageSize: 3000, segments: [])))
        #expect(throws: WireError.invalidPageSize(frame: .pages, pageSize: 3000)) { try decodeAll(pageSize.bytes) }
    }

    @Test func pfnsAboveThePerFrameLimitAreRejected() {
        let limits = WireLimits(maxPFNsPerFrame: 100)
        var bitmap = StreamBuilder.source(memory: [])
        bitmap.add(.dirtyBitmap(DirtyBitmap(startPFN: 0, pageSize: 4096, totalPFNs: 101, copied: .none)), device: 0)
        #expect(throws: WireError.tooManyPFNs(frame: .dirtyBitmap, count: 101, limit: 100)) { try decodeAll(bitmap.bytes, limits: limits) }
        var pages = StreamBuilder.source(memory: [])
        pages.add(.pages(Pages(pageSize: 4096, segments: [PageSegment(startPFN: 0, pageCount: 60, encoding: .zero, payload: []),
                                                          PageSegment(startPFN: 60, pageCount: 41, encoding: .zero, payload: [])])))
        #expect(throws: WireError.tooManyPFNs(frame: .pages, count: 101, limit: 100)) { try decodeAll(pages.bytes, limits: limits) }
    }

    @Test func fixedSizePayloadsMustHaveExactlyTheirSize() {
        var s = StreamBuilder.source()
        s.bytes += rawFrame(type: FrameType.keepAlive.rawValue, sequence: 1, payload: [0])
        #expect(throws: WireError.invalidPayloadLength(frame: .keepAlive, expected: 0, actual: 1)) { try decodeAll(s.bytes) }
        var e = StreamBuilder.source()
        e.bytes += rawFrame(type: FrameType.deviceEnd.rawValue, sequence: 1, payload: [UInt8](repeating: 0, count: 47))
        #expect(throws: WireError.invalidPayloadLength(frame: .deviceEnd, expected: 48, actual: 47)) { try decodeAll(e.bytes) }
        var r = StreamBuilder.source()
        var iter = payloadBytes(.iterationEnd(IterationEnd(iteration: 1, pendingBytes: 0, dirtyPages: 0)))
        iter[5] = 1  // reserved
        r.bytes += rawFrame(type: FrameType.iterationEnd.rawValue, sequence: 1, payload: iter)
        #expect(throws: WireError.invalidValue(frame: .iterationEnd, field: "reserved", value: 1)) { try decodeAll(r.bytes) }
    }
}
