import MigrationWire

/// How many PFNs one dirty-bitmap query (and so one DIRTY_BITMAP frame) covers:
/// the receiver's `maxPFNsPerFrame`, and no more than a bitmap that fits its
/// `maxPayload`; a multiple of 8 so bitmaps split on byte boundaries.
enum DirtyWindow {
    static func pfns(for limits: WireLimits) -> UInt64 {
        let byPayload = UInt64(max(limits.maxPayload - DirtyBitmap.headerSize, 1)) * 8
        return max(min(limits.maxPFNsPerFrame, byPayload) / 8 * 8, 8)
    }
}
