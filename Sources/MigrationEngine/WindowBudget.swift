import MigrationWire

/// The source's retained window together with the device data on its way into it
/// (PROTOCOL.md §13.3). A device read reserves its frame's room before it happens
/// (`reserve`); the frame takes the reservation over when it is numbered (`record`),
/// and an ACK frees it. So the pieces in the send pipeline (up to workers × 4 + 4
/// of them) count against the capacity from the read on: device data retained or
/// in flight never passes the capacity (one frame into an empty window excepted).
/// Version 4's lane PAGES frames (retained as bytes) wait only for the retained bytes
/// to leave room (`FrameWriter.waitForRetainedRoom`): reservations may be for frames
/// behind them in the pipeline, which only they let through. So with lanes the window
/// holds at most twice its capacity.
struct WindowBudget {
    private(set) var window: RetainedWindow
    /// One per DEVICE_DATA frame read but not numbered yet, oldest first: the
    /// pipeline numbers frames in the order they were read.
    private var reservations: [Int] = []
    private var oldest = 0
    private(set) var reservedBytes = 0

    init(_ window: RetainedWindow) { self.window = window }

    /// Retained bytes plus the room promised to frames not yet numbered.
    var committedBytes: Int { window.retainedBytes + reservedBytes }

    /// Whether a frame of up to `bytes` encoded bytes may be read now. An empty
    /// window always takes one, so a frame larger than the capacity cannot stall.
    func hasRoom(for bytes: Int) -> Bool { committedBytes == 0 || committedBytes + bytes <= window.capacity }

    /// A device read of a frame of up to `bytes` encoded bytes is about to happen.
    mutating func reserve(_ bytes: Int) {
        reservations.append(bytes)
        reservedBytes += bytes
    }

    /// A frame was numbered: a DEVICE_DATA frame hands its reservation to the window.
    mutating func record(_ body: FrameBody, device: UInt32, encoded: [UInt8]) {
        if case .deviceData = body, oldest < reservations.count {
            reservedBytes -= reservations[oldest]
            oldest += 1
            if oldest >= 1024 { reservations.removeFirst(oldest); oldest = 0 }
        }
        window.record(body, device: device, encoded: encoded)
    }

    /// STREAM_END (version 3): retained as its bytes, like any control frame.
    mutating func record(encoded: [UInt8]) { window.record(encoded: encoded) }

    mutating func acknowledge(_ position: StreamPosition) throws(WireError) { try window.acknowledge(position) }

    mutating func replay(from position: StreamPosition) throws(WireError) -> [RetainedWindow.ReplayItem] {
        try window.replay(from: position)
    }
}
