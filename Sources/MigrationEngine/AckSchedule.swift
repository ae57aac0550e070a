import MigrationWire

/// When the destination acknowledges (PROTOCOL.md §13.3): once the source's bytes
/// since the last ACK reach `RetainedWindow.ackByteInterval`, or
/// `ackDelayMilliseconds` after the first frame the last ACK does not cover. An ACK
/// counts the bytes read but its position only the frames decoded: bytes read before
/// their frame was decoded are not covered until the position moves past them, so a
/// moved position is due again on the 250 ms rule even when no byte more arrives.
struct AckSchedule {
    private var bytesAtLastAck: UInt64
    private var positionAtLastAck: StreamPosition
    private var unacknowledgedSince: ContinuousClock.Instant?

    init(bytesReceived: UInt64, position: StreamPosition) {
        bytesAtLastAck = bytesReceived
        positionAtLastAck = position
    }

    mutating func isDue(bytesReceived: UInt64, position: StreamPosition, now: ContinuousClock.Instant = .now) -> Bool {
        guard bytesReceived > bytesAtLastAck || position != positionAtLastAck else { return false }
        if bytesReceived - bytesAtLastAck >= UInt64(RetainedWindow.ackByteInterval) { return true }
        let since = unacknowledgedSince ?? now
        unacknowledgedSince = since
        return now - since >= .milliseconds(RetainedWindow.ackDelayMilliseconds)
    }

    mutating func sent(bytesReceived: UInt64, position: StreamPosition) {
        bytesAtLastAck = bytesReceived
        positionAtLastAck = position
        unacknowledgedSince = nil
    }
}
