import MigrationWire
import SyncPrimitives

/// What one stream's destination holds, as far as the source may rely on it for page
/// copies (PROTOCOL.md §17): PFN → fingerprint of the bytes that stream last sent
/// there, and fingerprint → PFN to find them.
///
/// A copy may only name a page whose bytes the destination applied and will not lose:
/// - an entry enters when an ACK covers the frame that sent the page (`pend`,
///   `acknowledge`), so a replay after a lost connection, which may build that frame
///   again from newer bytes (§13.7), never changes what an entry says;
/// - the producer clears a page's entry before it hands out a batch that sends the
///   page again (`invalidate`), and an entry from a batch handed out before that
///   clearing never enters (each slot keeps the newest batch generation that touched it);
/// - workers look entries up while batches are encoded in parallel: a batch sees only
///   pages of frames acknowledged, all of which precede it on its stream.
/// A slot that forgets (another PFN or fingerprint took it) only costs a copy.
///
/// Bounded: `capacity` slots each way, 40 bytes a slot, and 256 KiB of sketch bits,
/// whatever the guest's size.
final class PageCopyTable: @unchecked Sendable {  // all state under `lock`
    let fingerprinter: PageFingerprinter
    private let lock = Lock()
    private let mask: UInt64
    private var slotPFN: [UInt64]
    private var slotPrint: [PageFingerprint]
    private var slotGeneration: [UInt64]
    /// fingerprint.low → the PFN whose slot holds it (checked there, all 128 bits).
    private var index: [UInt64]
    private var generation: UInt64 = 0
    /// One bit per sketch hash (`PageFingerprinter.sketch` mod 2^21), set when a page with
    /// it enters; never cleared (a stale bit costs one fingerprint, never a wrong copy).
    private var sketches = [UInt64](repeating: 0, count: PageCopyTable.sketchBits / 64)
    static let sketchBits = 1 << 21
    /// Frames numbered but not yet acknowledged, in sequence order.
    private var pending: [(sequence: UInt64, generation: UInt64, sent: [SentPage])] = []
    private var pendingPages = 0
    /// Beyond this many pages awaiting an ACK the oldest are forgotten (a window of
    /// frames never acknowledged must not grow the table's memory).
    static let maxPendingPages = 1 << 18

    /// The default: a window of 2^18 pages (1 GiB of 4 KiB pages), 10 MiB.
    static let defaultCapacity = 1 << 18

    init(capacity: Int = PageCopyTable.defaultCapacity, fingerprinter: PageFingerprinter = .random()) {
        precondition(capacity > 0 && capacity & (capacity - 1) == 0, "a power of two")
        self.fingerprinter = fingerprinter
        mask = UInt64(capacity - 1)
        slotPFN = Array(repeating: .max, count: capacity)
        slotPrint = Array(repeating: .none, count: capacity)
        slotGeneration = Array(repeating: 0, count: capacity)
        index = Array(repeating: .max, count: capacity)
    }

    /// Before a batch that sends `startPFN..<startPFN+count` is handed out: those pages
    /// are no copy's source any more. Returns the batch's generation (for `pend`).
    func invalidate(startPFN: UInt64, count: Int) -> UInt64 {
        lock.withLock {
            generation += 1
            for pfn in startPFN..<(startPFN + UInt64(count)) {
                let slot = Int(pfn & mask)
                slotPFN[slot] = pfn
                slotPrint[slot] = .none
                slotGeneration[slot] = generation
            }
            return generation
        }
    }

    /// For each sketch, whether a page that had it ever entered.
    func mayHold(_ sketches: [UInt32?]) -> [Bool] {
        lock.withLock {
            sketches.map { s in
                guard let s else { return false }
                let bit = Int(s) & (PageCopyTable.sketchBits - 1)
                return self.sketches[bit >> 6] & (1 << UInt64(bit & 63)) != 0
            }
        }
    }

    /// For each fingerprint, the PFN whose acknowledged bytes have it, or nil.
    func find(_ prints: [PageFingerprint?]) -> [UInt64?] {
        lock.withLock {
            prints.map { print in
                guard let print else { return nil }
                let pfn = index[Int(print.low & mask)]
                guard pfn != .max else { return nil }
                let slot = Int(pfn & mask)
                return slotPFN[slot] == pfn && slotPrint[slot] == print ? pfn : nil
            }
        }
    }

    /// A frame was numbered `sequence`: its pages enter once an ACK covers it.
    func pend(sequence: UInt64, generation: UInt64, sent: [SentPage]) {
        guard !sent.isEmpty else { return }
        lock.withLock {
            pending.append((sequence, generation, sent))
            pendingPages += sent.count
            while pendingPages > PageCopyTable.maxPendingPages, !pending.isEmpty {
                pendingPages -= pending.removeFirst().sent.count
            }
        }
    }

    /// The destination holds every frame below `nextSequence` (§13.3).
    func acknowledge(nextSequence: UInt64) {
        lock.withLock {
            var done = 0
            for frame in pending {
                guard frame.sequence < nextSequence else { break }
                for page in frame.sent { enter(page, generation: frame.generation) }
                pendingPages -= frame.sent.count
                done += 1
            }
            pending.removeFirst(done)
        }
    }

    /// The connection was lost: frames not acknowledged may be built again (§13.7), so
    /// what they sent is not relied on.
    func forgetPending() {
        lock.withLock {
            pending.removeAll()
            pendingPages = 0
        }
    }

    private func enter(_ page: SentPage, generation batch: UInt64) {
        let slot = Int(page.pfn & mask)
        // Touched by a later batch (the page sent again, or another PFN here): not this one's to fill.
        guard slotGeneration[slot] <= batch else { return }
        slotPFN[slot] = page.pfn
        slotPrint[slot] = page.fingerprint
        slotGeneration[slot] = batch
        index[Int(page.fingerprint.low & mask)] = page.pfn
        let bit = Int(page.sketch) & (PageCopyTable.sketchBits - 1)
        sketches[bit >> 6] |= 1 << UInt64(bit & 63)
    }
}
