import VFIODevice

/// The writes of one workload step, the same for both simulated drivers: device
/// state rewritten in short runs, then guest pages DMA-written — half as one
/// contiguous burst (a DMA buffer), half scattered.
enum WorkloadWrites {
    /// Rewrites `bytes` of `state` in runs of 1…`maxRun` bytes; `changed` gets each run.
    static func rewriteState(_ state: DeviceStateMemory, bytes: Int, maxRun: Int, rng: inout SplitMix64,
                             changed: (Range<Int>) -> Void) {
        var remaining = bytes
        while remaining > 0 {
            let run = min(remaining, 1 + Int(rng.next(below: UInt64(maxRun))))
            let start = Int(rng.next(below: UInt64(max(1, state.count - run + 1))))
            let end = min(state.count, start + run)
            state.fill(start..<end, with: &rng)
            changed(start..<end)
            remaining -= run
        }
    }

    /// `pages` DMA writes into a guest of `pageCount` pages through `dma`. `random(n)`
    /// draws below n from the driver's generator, which `dma` draws from too: a
    /// closure, not an `inout` generator, so the two never overlap.
    static func dirtyGuest(pages: Int, pageCount: UInt64, random: (UInt64) -> UInt64, dma: (UInt64) -> Void) {
        guard pageCount > 0, pages > 0 else { return }
        let burst = pages / 2
        let burstStart = random(pageCount)
        for i in 0..<burst { dma((burstStart + UInt64(i)) % pageCount) }
        for _ in burst..<pages { dma(random(pageCount)) }
    }
}
