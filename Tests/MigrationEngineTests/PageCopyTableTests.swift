import Testing
@testable import MigrationEngine
import MigrationWire

/// What the source may name in a copy segment (PROTOCOL.md §17.4): only pages whose
/// bytes the destination holds for certain — sent in a frame an ACK covered, not sent
/// again since, and not lost to a replay.
@Suite struct PageCopyTableTests {
    static let a = PageFingerprint(high: 1, low: 0xA)
    static let b = PageFingerprint(high: 2, low: 0xB)

    /// A table of 16 slots with a fixed secret (the fingerprints here are given, not computed).
    static func table() -> PageCopyTable {
        PageCopyTable(capacity: 16, fingerprinter: PageFingerprinter(secret: Array(repeating: 7, count: PageFingerprinter.secretBytes)))
    }

    /// `pfn`'s batch handed out, numbered `sequence`, sending `print` there.
    static func send(_ t: PageCopyTable, pfn: UInt64, _ print: PageFingerprint, sequence: UInt64) {
        let generation = t.invalidate(startPFN: pfn, count: 1)
        t.pend(sequence: sequence, generation: generation, sent: [SentPage(pfn: pfn, fingerprint: print, sketch: UInt32(truncatingIfNeeded: print.low))])
    }

    @Test func aPageIsASourceOnlyOnceAnAckCoversItsFrame() {
        let t = Self.table()
        Self.send(t, pfn: 3, Self.a, sequence: 10)
        #expect(t.find([Self.a]) == [nil], "numbered, not acknowledged")
        t.acknowledge(nextSequence: 10)
        #expect(t.find([Self.a]) == [nil], "an ACK below the frame does not cover it")
        t.acknowledge(nextSequence: 11)
        #expect(t.find([Self.a, Self.b, nil]) == [3, nil, nil])
    }

    @Test func sendingAPageAgainEndsItAsASourceAtOnce() {
        let t = Self.table()
        Self.send(t, pfn: 3, Self.a, sequence: 10)
        t.acknowledge(nextSequence: 11)
        // Handed out again (new bytes on their way): no later batch may name its old bytes.
        let generation = t.invalidate(startPFN: 3, count: 1)
        #expect(t.find([Self.a]) == [nil])
        t.pend(sequence: 12, generation: generation, sent: [SentPage(pfn: 3, fingerprint: Self.b, sketch: 0xB)])
        t.acknowledge(nextSequence: 13)
        #expect(t.find([Self.a, Self.b]) == [nil, 3])
    }

    /// The frame of the first copy is acknowledged only after the page was handed out
    /// again: the old bytes must not come back as a source.
    @Test func anAckForAnOlderBatchDoesNotRestoreWhatANewerOneSends() {
        let t = Self.table()
        Self.send(t, pfn: 3, Self.a, sequence: 10)
        _ = t.invalidate(startPFN: 3, count: 1)  // sent again in a batch not yet numbered
        t.acknowledge(nextSequence: 11)
        #expect(t.find([Self.a]) == [nil])
    }

    @Test func aReplayForgetsWhatWasNotAcknowledged() {
        let t = Self.table()
        Self.send(t, pfn: 3, Self.a, sequence: 10)
        Self.send(t, pfn: 4, Self.b, sequence: 11)
        t.acknowledge(nextSequence: 11)
        t.forgetPending()  // frame 11 may be built again from newer bytes (§13.7)
        t.acknowledge(nextSequence: 12)
        #expect(t.find([Self.a, Self.b]) == [3, nil])
    }

    /// PFN 3 and 19 share a slot of 16: the newer one wins, and the older one's
    /// fingerprint finds nothing (not the other PFN).
    @Test func aPageThatLosesItsSlotIsNoSourceAnyMore() {
        let t = Self.table()
        Self.send(t, pfn: 3, Self.a, sequence: 10)
        t.acknowledge(nextSequence: 11)
        Self.send(t, pfn: 19, Self.b, sequence: 11)
        #expect(t.find([Self.a]) == [nil], "the slot went to PFN 19 when its batch was handed out")
        t.acknowledge(nextSequence: 12)
        #expect(t.find([Self.a, Self.b]) == [nil, 19])
    }

    /// The index is keyed by the low 64 bits; a fingerprint is found only when all 128 match.
    @Test func allOneHundredTwentyEightBitsMustMatch() {
        let t = Self.table()
        Self.send(t, pfn: 3, Self.a, sequence: 10)
        t.acknowledge(nextSequence: 11)
        #expect(t.find([PageFingerprint(high: 99, low: Self.a.low)]) == [nil])
    }

    /// A page whose sketch never entered cannot be a copy, so its fingerprint is not taken.
    @Test func sketchesSayWhichPagesMayBeHeld() {
        let t = Self.table()
        #expect(t.mayHold([0xA, nil]) == [false, false])
        Self.send(t, pfn: 3, Self.a, sequence: 10)
        #expect(t.mayHold([0xA]) == [false], "pending, not entered")
        t.acknowledge(nextSequence: 11)
        #expect(t.mayHold([0xA, 0xA + UInt32(PageCopyTable.sketchBits), 0xB, nil]) == [true, true, false, false],
                "the bit of 0xA (and what shares it) is set, 0xB's is not, a zero page never")
    }

    @Test func pendingPagesAreBounded() {
        let t = Self.table()
        let n = PageCopyTable.maxPendingPages
        let sent = (0..<UInt64(n)).map { SentPage(pfn: $0 % 16, fingerprint: PageFingerprint(high: $0 + 1, low: $0 + 1), sketch: 0) }
        t.pend(sequence: 0, generation: t.invalidate(startPFN: 0, count: 16), sent: sent)
        Self.send(t, pfn: 5, Self.a, sequence: 1)  // pushes the first frame out
        t.acknowledge(nextSequence: 2)
        #expect(t.find([sent.last!.fingerprint]) == [nil], "the oldest frame was forgotten")
        #expect(t.find([Self.a]) == [5])
    }

    @Test func fingerprintsDependOnTheSecretAndAreNeverNone() {
        let page: [UInt8] = Array(repeating: 0x5A, count: 4096)
        let one = PageFingerprinter(secret: Array(repeating: 1, count: PageFingerprinter.secretBytes))
        let two = PageFingerprinter(secret: Array(repeating: 2, count: PageFingerprinter.secretBytes))
        #expect(one.fingerprint(page.span.bytes) == one.fingerprint(page.span.bytes))
        #expect(one.fingerprint(page.span.bytes) != two.fingerprint(page.span.bytes))
        #expect(one.fingerprint(page.span.bytes) != .none)
        var other = page
        other[4095] ^= 1
        #expect(one.fingerprint(page.span.bytes) != one.fingerprint(other.span.bytes))
        #expect(one.sketch(page.span.bytes) == two.sketch(page.span.bytes), "a sketch depends on the bytes alone")
        var spread = page
        spread[4096 / 8 * 3] ^= 1  // a word the sketch reads
        #expect(one.sketch(page.span.bytes) != one.sketch(spread.span.bytes))
    }
}
