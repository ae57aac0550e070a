import Testing
@testable import vfio_migrate_bench

/// --compare: rows are matched by link and mode, each row's worst run counts, and
/// flat means under 10 % or under 4 MiB more.
@Suite struct MemoryGrowthTests {
    static let mib: UInt64 = 1 << 20

    func row(_ link: String, _ mode: String, source: UInt64, run: Int = 1) -> BenchRow {
        var r = Rows.ours(mode, 1, run: run, rss: 10 * Self.mib)
        (r.link, r.rssAnonSource) = (link, source * Self.mib)
        return r
    }

    func json(_ link: String, _ mode: String, source: UInt64) -> [String: Any] {
        ["link": link, "mode": mode, "verified": true, "rss_anon_peak_source": source * Self.mib, "rss_anon_peak_destination": 10 * Self.mib]
    }

    @Test func rowsAreMatchedByLinkAndMode() {
        let old = [json("loopback", "auto", source: 42), json("1gbit", "auto", source: 88)]
        let new = [row("loopback", "auto", source: 44), row("1gbit", "auto", source: 90), row("1gbit", "auto", source: 89, run: 2)]
        let t = MemoryGrowth.targets(old: old, oldGuest: "1.0 GiB", new: new, newGuest: "4.0 GiB")
        let source = t.filter { $0.name.contains("source") }
        #expect(source.count == 2 && source.allSatisfy { $0.verdict == .pass }, "\(source.map(\.detail))")
        #expect(source.contains { $0.name.hasPrefix("1gbit auto") && $0.detail == "88 → 90 MiB = +2.3 %" })
    }

    @Test func growthFailsPastBothBounds() {
        let old = [json("1gbit", "auto", source: 42), json("1gbit", "none", source: 14)]
        let new = [row("1gbit", "auto", source: 52), row("1gbit", "none", source: 16)]
        let t = MemoryGrowth.targets(old: old, oldGuest: "1.0 GiB", new: new, newGuest: "4.0 GiB").filter { $0.name.contains("source") }
        #expect(t.first { $0.name.hasPrefix("1gbit auto") }?.verdict == .fail, "+10 MiB, +24 %")
        #expect(t.first { $0.name.hasPrefix("1gbit none") }?.verdict == .pass, "+14 % but only 2 MiB")
    }
}
