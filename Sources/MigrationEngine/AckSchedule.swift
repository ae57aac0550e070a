import MigrationWire

/// When the destination acknowledges (PROTOCOL.md §13.3): once the source's bytes
/// since the last ACK reach `RetainedWindow.ackByteInterval`, or
/// `ackDelayMilliseconds` after the first frame the last ACK does not cover.
struct AckSchedule {
    private var bytesAtLastAck: UInt64
    private var unacknowledgedSince: ContinuousClock.Instant?

    init(bytesReceived: UInt64) { bytesAtLastAck = bytesReceived }

    mutating func isDue(bytesReceived: UInt64) -> Bool {
        guard bytesReceived > bytesAtLastAck else { return false }
        if bytesReceived - bytesAtLastAck >= UInt64(RetainedWindow.ackByteInterval) { return true }
        let since = unacknowledgedSince ?? .now
        unacknowledgedSince = since
        return ContinuousClock.now - since >= .milliseconds(RetainedWindow.ackDelayMilliseconds)
    }

    mutating func sent(bytesReceived: UInt64) {
        bytesAtLastAck = bytesReceived
        unacknowledgedSince = nil
    }
}
