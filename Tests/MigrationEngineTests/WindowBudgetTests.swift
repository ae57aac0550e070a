import Testing
@testable import MigrationEngine
import MigrationWire

/// The source's window counts device data from the read on (§13.3): pieces read
/// and still in the send pipeline hold room, so what is retained never passes the
/// capacity however many pieces the pipeline holds.
@Suite struct WindowBudgetTests {
    static let piece = 1000
    /// A raw DEVICE_DATA frame of one piece: header, 16 bytes of fields, the data.
    static let frameBound = piece + FrameDecoder.headerSize + 16

    struct Source {
        var encoder = FrameEncoder()
        var budget: WindowBudget
        init(frames: Int) {
            budget = WindowBudget(RetainedWindow(capacity: frames * WindowBudgetTests.frameBound, deviceCount: 1, nextSequence: 0))
        }
        /// The pipeline numbers the oldest piece read.
        mutating func number(_ body: FrameBody) throws {
            let bytes = try encoder.encode(body)
            budget.record(body, device: 0, encoded: bytes)
        }
        /// Pieces read while the window has room, none numbered yet (a slow writer).
        mutating func readWhileRoom(limit: Int = 100) -> Int {
            var reads = 0
            while reads < limit, budget.hasRoom(for: WindowBudgetTests.frameBound) {
                budget.reserve(WindowBudgetTests.frameBound)
                reads += 1
            }
            return reads
        }
    }

    static let chunk = FrameBody.deviceData(DeviceData(phase: .precopy, encoding: .raw, originalLength: UInt32(piece),
                                                       payload: [UInt8](repeating: 9, count: piece), part: .whole))

    @Test func piecesInThePipelineHoldRoomUntilTheyAreNumberedAndAcknowledged() throws {
        var s = Source(frames: 4)
        // Nothing numbered yet, yet only four pieces may be read (the retained bytes alone would allow a hundred).
        #expect(s.readWhileRoom() == 4)
        #expect(s.budget.window.retainedBytes == 0 && s.budget.committedBytes == 4 * Self.frameBound)
        // Numbering moves the room from reserved to retained; control frames take none of it.
        try s.number(.iterationEnd(IterationEnd(iteration: 0, pendingBytes: 0, dirtyPages: 0)))
        for _ in 0..<4 { try s.number(Self.chunk) }
        var fresh = FrameEncoder()
        let chunkFrame = try fresh.encode(Self.chunk).count
        #expect(s.budget.reservedBytes == 0 && chunkFrame <= Self.frameBound)
        // The device data retained stays within the capacity; control frames (here 48 bytes) are never held back.
        #expect(s.budget.window.retainedBytes - (FrameDecoder.headerSize + 24) == 4 * chunkFrame)
        #expect(4 * chunkFrame <= s.budget.window.capacity)
        #expect(s.readWhileRoom() == 0)
        // An ACK of the control frame and two pieces makes room for exactly two more.
        try s.budget.acknowledge(StreamPosition(nextSequence: 3, deviceBytes: [UInt64(2 * Self.piece)]))
        #expect(s.readWhileRoom() == 2)
    }

    @Test func anEmptyWindowTakesOneFrameLargerThanItsCapacity() {
        var s = Source(frames: 1)
        #expect(s.budget.hasRoom(for: 10 * Self.frameBound))
        s.budget.reserve(10 * Self.frameBound)
        #expect(!s.budget.hasRoom(for: 1))
    }
}
