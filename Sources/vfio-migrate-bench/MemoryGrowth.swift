import Foundation

/// Peak RssAnon of a smaller guest's bench (its --json) against this one's, per link,
/// mode and side: "flat from 1 to 4 GiB" (issue 14). Each row's peak is the worst of
/// its verified runs. Flat: less than 10 % more, or less than 4 MiB more, since a
/// process of 15 MiB varies by a MiB from run to run whatever the guest.
enum MemoryGrowth {
    static let maxShare = 0.10
    static let noiseBytes = 4.0 * 1024 * 1024

    /// One side of one row: (link, mode) → peak bytes.
    typealias Peaks = [String: Double]

    static func key(link: String, mode: String?) -> String { "\(link) \(mode ?? "?")" }

    /// The worst peak per key.
    static func worst(_ peaks: [(key: String, bytes: Double)]) -> Peaks { Dictionary(peaks, uniquingKeysWith: max) }

    /// The peaks of a previous --json output's "runs".
    static func peaks(ofJSONRuns runs: [[String: Any]], side: String) -> Peaks {
        worst(runs.compactMap { r in
            guard r["verified"] as? Bool == true, let link = r["link"] as? String,
                  let v = (r["rss_anon_peak_\(side)"] as? NSNumber)?.doubleValue, v > 0 else { return nil }
            return (key(link: link, mode: r["mode"] as? String), v)
        })
    }

    static func peaks(of runs: [BenchRow], side: String) -> Peaks {
        worst(runs.compactMap { r in
            guard r.verified == true, let v = side == "source" ? r.rssAnonSource : r.rssAnonDestination else { return nil }
            return (key(link: r.link, mode: r.mode), Double(v))
        })
    }

    /// A goal per row and side that ran in both.
    static func targets(old: [[String: Any]], oldGuest: String, new: [BenchRow], newGuest: String) -> [BenchTarget] {
        var targets: [BenchTarget] = []
        for side in ["source", "destination"] {
            let before = peaks(ofJSONRuns: old, side: side), after = peaks(of: new, side: side)
            for k in after.keys.sorted() {
                guard let b = before[k], let a = after[k] else { continue }
                let growth = a / b - 1
                targets.append(BenchTarget(name: "\(k): \(side) peak RssAnon flat from \(oldGuest) to \(newGuest) (< \(Int(maxShare * 100)) % or < \(Int(noiseBytes / BenchReport.mib)) MiB more)",
                                           detail: String(format: "%.0f → %.0f MiB = %+.1f %%", b / BenchReport.mib, a / BenchReport.mib, growth * 100),
                                           pass: growth < maxShare || a - b < noiseBytes))
            }
        }
        return targets
    }
}
