import Testing
@testable import MigrationWire

private func piece(_ bytes: [UInt8], _ part: ChunkPart, phase: Phase = .precopy) -> FrameBody {
    .deviceData(DeviceData(phase: phase, encoding: .raw, originalLength: UInt32(bytes.count), payload: bytes, part: part))
}
private let sha0 = [UInt8](repeating: 0, count: 32)

/// A chunk larger than a frame travels as a first piece and continuations
/// (PROTOCOL.md §5.2); every rule a receiver must enforce, with its exact error.
@Suite struct ChunkContinuationTests {
    @Test func firstAndContinuationsRoundTripAndCloseAtTheDeclaredLength() throws {
        var s = StreamBuilder.source()
        s.add(piece([1, 2, 3], .first(chunkLength: 7)), device: 1)
        s.add(.keepAlive)                                  // keep-alives may pass
        s.add(piece([4, 5], .next), device: 1)
        s.add(piece([6, 7], .next), device: 1)
        s.add(piece([9], .whole), device: 0)               // chunk closed: anything goes again
        s.add(.deviceData(DeviceData(phase: .precopy, encoding: .deflate, originalLength: 4, payload: try Deflater(level: 1).compress([0, 0, 0, 0]),
                                     part: .first(chunkLength: 1 << 40))), device: 0)
        let frames = try decodeAll(s.bytes)
        #expect(frames == s.frames)
        guard case .deviceData(let d) = frames[6].body else { Issue.record("not DEVICE_DATA"); return }
        #expect(d.part == .first(chunkLength: 1 << 40))   // a chunk of any u64 size can be declared
    }

    @Test func layoutOfAFirstPiece() {
        let bytes = payloadBytes(piece([0xAB], .first(chunkLength: 0x1_0000_0002), phase: .stopcopy))
        #expect(bytes == [1, 0, 1, 0, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0xAB])
        #expect(payloadBytes(piece([0xAB], .next)) == [0, 0, 2, 0, 1, 0, 0, 0, 0xAB])
    }

    @Test func continuationWithoutAFirstPiece() {
        var s = StreamBuilder.source()
        s.add(piece([1], .next), device: 0)
        #expect(throws: WireError.continuationWithoutStart(device: 0)) { try decodeAll(s.bytes) }
        var closed = StreamBuilder.source()
        closed.add(piece([1, 2], .first(chunkLength: 3)), device: 0)
        closed.add(piece([3], .next), device: 0)
        closed.add(piece([4], .next), device: 0)            // the chunk was already whole
        #expect(throws: WireError.continuationWithoutStart(device: 0)) { try decodeAll(closed.bytes) }
    }

    @Test func aNewChunkWhileOneIsOpen() {
        for part in [ChunkPart.whole, .first(chunkLength: 9)] {
            var s = StreamBuilder.source()
            s.add(piece([1, 2], .first(chunkLength: 5)), device: 0)
            s.add(piece([3, 4], part), device: 0)
            #expect(throws: WireError.chunkIncomplete(device: 0, missing: 3, interruptedBy: .deviceData, frameDevice: 0)) { try decodeAll(s.bytes) }
        }
    }

    @Test func anotherDevicesFrameInterleaved() {
        let others: [(FrameBody, UInt32)] = [
            (piece([9], .whole), 1),
            (.dirtyBitmap(DirtyBitmap(startPFN: 0, pageSize: 4096, totalPFNs: 8, copied: .none)), 0),
            (.pages(Pages(pageSize: 4096, segments: [PageSegment(startPFN: 0, pageCount: 1, encoding: .zero, payload: [])])), 0),
            (.iterationEnd(IterationEnd(iteration: 0, pendingBytes: 0, dirtyPages: 0)), 0),
        ]
        for (body, device) in others {
            var s = StreamBuilder.source()
            s.add(piece([1, 2], .first(chunkLength: 5)), device: 0)
            s.add(body, device: device)
            #expect(throws: WireError.chunkIncomplete(device: 0, missing: 3, interruptedBy: body.type, frameDevice: device)) { try decodeAll(s.bytes) }
        }
    }

    @Test func declaredLengthNotReachedBeforeDeviceEndOrComplete() {
        var s = StreamBuilder.source(devices: 1)
        s.add(piece([1, 2], .first(chunkLength: 5)), device: 0)
        s.add(piece([3], .next), device: 0)
        s.add(.deviceEnd(DeviceEnd(totalBytes: 3, chunkCount: 1, sha256: sha0)), device: 0)
        #expect(throws: WireError.chunkIncomplete(device: 0, missing: 2, interruptedBy: .deviceEnd, frameDevice: 0)) { try decodeAll(s.bytes) }
    }

    @Test func declaredLengthExceeded() {
        var s = StreamBuilder.source()
        s.add(piece([1, 2], .first(chunkLength: 5)), device: 0)
        s.add(piece([3, 4, 5, 6], .next), device: 0)
        #expect(throws: WireError.chunkOverrun(device: 0, missing: 3, piece: 4)) { try decodeAll(s.bytes) }
    }

    @Test func phaseChangeInsideAChunk() {
        var s = StreamBuilder.source()
        s.add(piece([1, 2], .first(chunkLength: 5)), device: 0)
        s.add(piece([3], .next, phase: .stopcopy), device: 0)
        #expect(throws: WireError.chunkPhaseChanged(device: 0)) { try decodeAll(s.bytes) }
    }

    @Test func malformedPiecesAreRejected() {
        var empty = StreamBuilder.source()
        empty.add(piece([], .first(chunkLength: 5)), device: 0)
        #expect(throws: WireError.invalidValue(frame: .deviceData, field: "original length of a piece", value: 0)) { try decodeAll(empty.bytes) }
        var emptyNext = StreamBuilder.source()
        emptyNext.add(piece([1], .first(chunkLength: 5)), device: 0)
        emptyNext.add(piece([], .next), device: 0)
        #expect(throws: WireError.invalidValue(frame: .deviceData, field: "original length of a piece", value: 0)) { try decodeAll(emptyNext.bytes) }
        var fits = StreamBuilder.source()
        fits.add(piece([1, 2], .first(chunkLength: 2)), device: 0)   // would fit one frame: must be sent whole
        #expect(throws: WireError.invalidValue(frame: .deviceData, field: "chunk length (must exceed the first piece)", value: 2)) { try decodeAll(fits.bytes) }
        var unknown = StreamBuilder.source()
        var payload = payloadBytes(piece([1], .whole))
        payload[2] = 3
        unknown.bytes += rawFrame(type: 2, sequence: 1, payload: payload)
        #expect(throws: WireError.invalidValue(frame: .deviceData, field: "part", value: 3)) { try decodeAll(unknown.bytes) }
        var reserved = StreamBuilder.source()
        var r = payloadBytes(piece([1], .whole))
        r[3] = 1
        reserved.bytes += rawFrame(type: 2, sequence: 1, payload: r)
        #expect(throws: WireError.invalidValue(frame: .deviceData, field: "reserved", value: 1)) { try decodeAll(reserved.bytes) }
        var cut = StreamBuilder.source()
        cut.bytes += rawFrame(type: 2, sequence: 1, payload: Array(payloadBytes(piece([1], .first(chunkLength: 9))).prefix(12)))
        #expect(throws: WireError.truncated(frame: .deviceData, field: "chunk length")) { try decodeAll(cut.bytes) }
    }

    @Test func abortMayInterruptAnOpenChunk() throws {
        var s = StreamBuilder.source()
        s.add(piece([1, 2], .first(chunkLength: 5)), device: 0)
        s.add(.abort(Abort(reason: .cancelled, message: "bye")))
        #expect(try decodeAll(s.bytes).count == 3)
    }
}
