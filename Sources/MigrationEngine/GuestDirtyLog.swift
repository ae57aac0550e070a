import VFIODevice

/// The pages the guest's vCPUs dirtied, which no device reports (KVM tracks them
/// for the VMM). Asked once per pre-copy round and once after the guest stopped:
/// one sync per round, so the VMM harvests its log once however many windows
/// the round is cut into.
public protocol GuestDirtyLog: Sendable {
    /// Pre-copy start, before any device leaves RUNNING: refuses when the VMM
    /// has not handed over a bitmap that fits the guest memory.
    func start(pageSize: UInt64, pageCount: UInt64) throws(GuestDirtyLogError)
    /// The pages dirtied since the previous sync, as one consistent copy.
    func sync() throws(GuestDirtyLogError) -> GuestDirtySnapshot
}

public struct GuestDirtyLogError: Error, Sendable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// One round's copy of the VMM's bitmap (docs/EVENTS.md "Dirty-log shared
/// memory": page i is bit i%64 of little-endian word i/64). A copy, so the VMM
/// can already refill its bitmap while the round's windows are sent.
public struct GuestDirtySnapshot: Sendable, Equatable {
    public var words: [UInt64]
    public var pageCount: UInt64

    public init(words: [UInt64], pageCount: UInt64) { self.words = words; self.pageCount = pageCount }

    /// The window [startPFN, startPFN+count) as a segment with a byte bitmap
    /// (the engine's form: LSB first within each byte).
    public func segment(startPFN: UInt64, count: UInt64, pageSize: UInt64) -> DirtySegment {
        var bytes = [UInt8](repeating: 0, count: Bitmap.byteCount(bits: count))
        var any = false
        for i in 0..<count {
            let page = startPFN + i
            guard page < pageCount else { break }
            let w = Int(page / 64)
            guard w < words.count, words[w] != 0 else { continue }
            if words[w] & (1 << (page % 64)) != 0 {
                bytes[Int(i / 8)] |= 1 << (i % 8)
                any = true
            }
        }
        return DirtySegment(startPFN: startPFN, pageSize: pageSize, pfnCount: count, pages: any ? .bitmap(bytes) : .none)
    }
}
