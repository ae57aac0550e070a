import Testing
@testable import MigrationWire

/// The source's window (§13.3, §13.7), alone and end to end with the decoders.
@Suite struct RetainedWindowTests {
    /// A source that records every frame it sends after HELLO.
    struct Source {
        var stream = StreamBuilder.source(version: .v2)
        var window: RetainedWindow
        init(capacity: Int = 1 << 20) { window = RetainedWindow(capacity: capacity, deviceCount: 2) }
        mutating func send(_ body: FrameBody, device: UInt32 = 0) {
            let start = stream.bytes.count
            stream.add(body, device: device)
            window.record(body, device: device, encoded: Array(stream.bytes[start...]))
        }
    }

    static func chunk(_ bytes: [UInt8], part: ChunkPart = .whole, phase: Phase = .precopy) -> FrameBody {
        .deviceData(DeviceData(phase: phase, encoding: .raw, originalLength: UInt32(bytes.count), payload: bytes, part: part))
    }
    static let pages = FrameBody.pages(Pages(pageSize: 4096, segments: [
        PageSegment(startPFN: 8, pageCount: 2, encoding: .zero, payload: []),
        PageSegment(startPFN: 20, pageCount: 1, encoding: .raw, payload: [UInt8](repeating: 7, count: 4096)),
    ]))

    /// PAGES (two runs) and KEEPALIVE keep no bytes but are charged their bookkeeping.
    static let bookkeeping = (RetainedWindow.entryCost + 2 * RetainedWindow.pageRunCost) + RetainedWindow.entryCost

    @Test func deviceDataIsRetainedPagesAndKeepAlivesAreNot() throws {
        var s = Source()
        s.send(Self.chunk([1, 2, 3]), device: 1)        // #1
        s.send(Self.pages)                               // #2
        s.send(.keepAlive)                               // #3
        s.send(.iterationEnd(IterationEnd(iteration: 0, pendingBytes: 0, dirtyPages: 3)))  // #4
        #expect(s.window.retainedBytes == (24 + 11) + (24 + 24) + Self.bookkeeping)
        #expect(s.window.firstSequence == 1 && s.window.nextSequence == 5)

        try s.window.acknowledge(StreamPosition(nextSequence: 2, deviceBytes: [0, 3]))
        #expect(s.window.retainedBytes == 48 + Self.bookkeeping && s.window.acknowledgedDeviceBytes == [0, 3])
        let replay = try s.window.replay(from: StreamPosition(nextSequence: 2, deviceBytes: [0, 3]))
        #expect(replay == [
            .pages(sequence: 2, pageSize: 4096, runs: [.init(startPFN: 8, pageCount: 2), .init(startPFN: 20, pageCount: 1)]),
            .keepAlive(sequence: 3),
            .retained(Array(s.stream.bytes[s.stream.offsets[4]...])),
        ])
    }

    /// An acknowledged frame's bytes are freed with the ACK, not when the slots are cut
    /// off in a batch later: a window of 1 MiB DEVICE_DATA frames held up to 1024 of
    /// them after their ACK (280 MiB RssAnon in the benchmark).
    @Test func anAcknowledgedFramesBytesAreFreedAtOnce() throws {
        var s = Source(capacity: 64 << 20)
        let data = [UInt8](repeating: 5, count: 64 << 10)
        for _ in 0..<8 { s.send(Self.chunk(data)) }
        #expect(s.window.storedBytes >= 8 * data.count)
        try s.window.acknowledge(StreamPosition(nextSequence: 7, deviceBytes: [UInt64(6 * data.count), 0]))
        #expect(s.window.storedBytes < 3 * (data.count + 64), "only the two frames not acknowledged stay: \(s.window.storedBytes)")
        #expect(s.window.retainedBytes == s.window.storedBytes)
    }

    @Test func positionsOutsideTheWindowOrWithOtherDeviceBytesAreRefused() throws {
        var s = Source()
        s.send(Self.chunk([1, 2, 3, 4]), device: 0)  // #1
        s.send(.keepAlive)                            // #2
        try s.window.acknowledge(StreamPosition(nextSequence: 2, deviceBytes: [4, 0]))
        #expect(throws: WireError.resumePointOutsideWindow(frame: .resumeAccept, resumePoint: 1, oldest: 2, next: 3)) {
            try s.window.replay(from: StreamPosition(nextSequence: 1, deviceBytes: [0, 0]))
        }
        #expect(throws: WireError.resumePointOutsideWindow(frame: .ack, resumePoint: 4, oldest: 2, next: 3)) {
            try s.window.acknowledge(StreamPosition(nextSequence: 4, deviceBytes: [4, 0]))
        }
        #expect(throws: WireError.positionMismatch(frame: .ack, device: 0, reported: 3, sent: 4)) {
            try s.window.acknowledge(StreamPosition(nextSequence: 3, deviceBytes: [3, 0]))
        }
        #expect(throws: WireError.positionDeviceCount(frame: .resumeAccept, declared: 1, announced: 2)) {
            try s.window.replay(from: StreamPosition(nextSequence: 3, deviceBytes: [4]))
        }
        // Nothing to send again when the destination has everything.
        #expect(try s.window.replay(from: StreamPosition(nextSequence: 3, deviceBytes: [4, 0])) == [])
    }

    /// §14.5 finding: an extra stream retains only PAGES and KEEPALIVE; uncharged, its
    /// window grew without bound under `--resume-window` while the destination held
    /// its position back. Charged, it fills and an ACK frees it; thousands of entries
    /// freed one ACK at a time (past the batch that cuts the array) keep the count right.
    @Test func pagesAndKeepAlivesFillTheWindowUntilAnAckFreesThem() throws {
        let capacity = 100 * RetainedWindow.entryCost
        var window = RetainedWindow(capacity: capacity, deviceCount: 0, nextSequence: 0)
        var encoder = FrameEncoder()
        var sent = 0
        while sent < 1000 && window.hasRoom(for: RetainedWindow.entryCost) {
            window.record(.keepAlive, encoded: try encoder.encode(.keepAlive))
            sent += 1
        }
        #expect(sent == 100 && window.retainedBytes == capacity)
        for _ in 0..<5000 {
            window.record(.keepAlive, encoded: try encoder.encode(.keepAlive))
            try window.acknowledge(StreamPosition(nextSequence: window.firstSequence + 1, deviceBytes: []))
        }
        #expect(window.retainedBytes == capacity && window.firstSequence == 5000)
        let replay = try window.replay(from: StreamPosition(nextSequence: 5050, deviceBytes: []))
        #expect(replay.first == .keepAlive(sequence: 5050) && replay.count == 50)
        #expect(window.retainedBytes == 50 * RetainedWindow.entryCost)
    }

    @Test func aFullWindowHasNoRoomUntilAnAckFreesIt() throws {
        var s = Source(capacity: 100)
        #expect(s.window.hasRoom(for: 1000))  // an empty window always takes one frame
        s.send(Self.chunk([UInt8](repeating: 1, count: 40)), device: 0)  // 72 bytes
        #expect(!s.window.hasRoom(for: 72))
        #expect(s.window.hasRoom(for: 28))
        try s.window.acknowledge(StreamPosition(nextSequence: 2, deviceBytes: [40, 0]))
        #expect(s.window.retainedBytes == 0 && s.window.hasRoom(for: 72))
        #expect(RetainedWindow.minimumCapacity(largestFrame: 16 << 20) == 17 << 20)
    }

    /// The whole cycle: the connection breaks mid-chunk with a frame half delivered;
    /// the destination's position, the handshake, the replay (PAGES read again) and
    /// the destination ends with every device byte once and the stream complete.
    @Test func aBrokenConnectionResumesByteExact() throws {
        var s = Source()
        s.send(Self.chunk([1, 2], part: .first(chunkLength: 6)), device: 0)  // #1
        s.send(Self.chunk([3, 4], part: .next), device: 0)                   // #2
        s.send(Self.chunk([5, 6], part: .next), device: 0)                   // #3
        s.send(Self.pages)                                                   // #4
        s.send(Self.chunk([9, 9, 9], phase: .stopcopy), device: 1)           // #5
        s.send(.deviceEnd(DeviceEnd(totalBytes: 6, chunkCount: 1, sha256: SHA256Digest.hash([1, 2, 3, 4, 5, 6]))), device: 0)
        s.send(.deviceEnd(DeviceEnd(totalBytes: 3, chunkCount: 1, sha256: SHA256Digest.hash([9, 9, 9]))), device: 1)
        s.send(.complete)                                                    // #8

        // The destination took frames up to #2 and part of #3, acknowledged #1.
        var destination = FrameDecoder(peer: .source, version: .v2)
        destination.feed(Array(s.stream.bytes.prefix(s.stream.offsets[3] + 27)))
        var applied: [UInt8] = []
        func take(_ m: WireMessage?) { if case .frame(let f)? = m, case .deviceData(let d) = f.body { applied += d.payload } }
        while let m = try destination.nextMessage() { take(m) }
        try s.window.acknowledge(StreamPosition(nextSequence: 2, deviceBytes: [2, 0]))
        let position = destination.suspend()
        #expect(position == StreamPosition(nextSequence: 3, deviceBytes: [4, 0]))

        // Handshake: RESUME both ways, then RESUME_ACCEPT.
        var sourceEncoder = FrameEncoder()
        _ = try sourceEncoder.encode(.keepAlive)  // stands for the source's HELLO: sequence numbering only
        let resume = Resume(sessionID: testSessionID, role: .source, proof: [UInt8](repeating: 1, count: 32))
        var atDestination = ResumeHandshakeDecoder(peer: .source, sessionID: testSessionID)
        atDestination.feed(try sourceEncoder.encode(.resume(resume)))
        #expect(try atDestination.next() == .resume(resume))
        destination.resume()
        let accept = ResumeAccept(progress: .receiving, destinationNextSequence: 3, position: position)

        // Replay: retained bytes as they were, PAGES built again at their number.
        var replayed: [UInt8] = []
        for item in try s.window.replay(from: accept.position) {
            switch item {
            case .retained(let bytes): replayed += bytes
            case .pages(let sequence, let pageSize, let runs):
                let segments = runs.map { PageSegment(startPFN: $0.startPFN, pageCount: $0.pageCount, encoding: .zero, payload: []) }
                replayed += try s.stream.encoder.regenerated(.pages(Pages(pageSize: pageSize, segments: segments)), sequence: sequence)
            case .keepAlive(let sequence): replayed += try s.stream.encoder.regenerated(.keepAlive, sequence: sequence)
            }
        }
        #expect(s.window.firstSequence == 3)
        for b in replayed { destination.feed([b]) ; while let m = try destination.nextMessage() { take(m) } }
        #expect(applied == [1, 2, 3, 4, 5, 6, 9, 9, 9])
        #expect(destination.state == .complete)
        #expect(destination.position == StreamPosition(nextSequence: 9, deviceBytes: [6, 3]))
    }
}
