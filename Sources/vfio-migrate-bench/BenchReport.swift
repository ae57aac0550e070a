import CommandLineSupport
import Foundation

/// Everything one bench invocation measured, the targets evaluated, and
/// the two renderings (table, JSON).
struct BenchReport {
    let settings: BenchSettings
    let corpus: BenchCorpus
    let directory: String
    var deflate: (seconds: Double, inputBytes: UInt64, outputBytes: UInt64)?
    var baselines: [BenchRow] = []
    var runs: [BenchRow] = []
    var targets: [BenchTarget] = []
    /// The machine is shared: the load when the bench started says how much to trust the figures.
    let loadAverage = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "?"

    static let mib = 1024.0 * 1024.0
    static let memoryLimit: UInt64 = 128 << 20

    var allVerified: Bool { runs.allSatisfy { $0.verified == true } && baselines.allSatisfy { $0.verified != false } }
    var tls: BenchRow? { baselines.first { $0.name.hasPrefix("TLS") && $0.verified == true } }
    var tcp: BenchRow? { baselines.first { $0.name.hasPrefix("plain TCP") && $0.verified == true } }

    mutating func evaluate() {
        targets = []
        for i in runs.indices {
            var r = runs[i]
            let tag = "\(r.mode ?? "?")#\(r.run)"
            var met: [Bool] = []
            func target(_ name: String, _ detail: String, _ pass: Bool) {
                targets.append(BenchTarget(name: "\(tag): \(name)", detail: detail, pass: pass)); met.append(pass)
            }
            target("verified", r.verified == true ? "destination device state and guest memory byte-identical" : r.problems.joined(separator: "; "), r.verified == true)
            if r.verified == true {
                if r.mode == "none" {
                    if let t = tls {
                        r.ratio = r.mbPerSecond / t.mbPerSecond; r.ratioLabel = String(format: "%.2f×TLS", r.ratio!)
                        target("none ≥ 0.8 × TLS layer", String(format: "%.0f MB/s vs TLS layer %.0f MB/s = %.2f", r.mbPerSecond, t.mbPerSecond, r.ratio!), r.ratio! >= 0.8)
                    }
                    target("none ≥ 800 MB/s", String(format: "%.0f MB/s of guest+device bytes", r.mbPerSecond), r.mbPerSecond >= 800)
                }
                if r.mode == "auto" || r.mode?.hasPrefix("zlib") == true, let d = deflate {
                    let timeRatio = r.wallSeconds / d.seconds
                    let wireRatio = Double(r.wireBytes ?? 0) / Double(max(d.outputBytes, 1))
                    r.ratio = timeRatio
                    r.ratioLabel = String(format: "%.2f×z1 time, %.3f×z1 size", timeRatio, wireRatio)
                    if r.mode == "auto" {
                        target("auto wall ≤ 0.35 × zlib-1 one-core time", String(format: "%.2f s vs %.2f s = %.2f", r.wallSeconds, d.seconds, timeRatio), timeRatio <= 0.35)
                        target("auto wire ≤ 1.05 × zlib-1 output", String(format: "%@ vs %@ = %.3f", formatBytes(r.wireBytes ?? 0), formatBytes(d.outputBytes), wireRatio), wireRatio <= 1.05)
                    }
                }
                if let s = r.rssAnonSource, let d = r.rssAnonDestination {
                    target("peak RssAnon ≤ 128 MiB each side",
                           String(format: "source %.0f MiB, destination %.0f MiB, guest %@",
                                  Double(s) / Self.mib, Double(d) / Self.mib, formatBytes(corpus.memoryBytes)),
                           s <= Self.memoryLimit && d <= Self.memoryLimit)
                }
                if let dt = r.downtimeMs {
                    let limit = 1.5 * settings.downtimeMs
                    let notConverged = r.converged == false
                    target("downtime ≤ 1.5 × --downtime-ms or not converged reported",
                           String(format: "%.0f ms (limit %.0f)%@", dt, limit, notConverged ? ", sender reported it did not converge" : ""),
                           dt <= limit || notConverged)
                }
            }
            r.targetMet = met.allSatisfy { $0 }
            runs[i] = r
        }
        if let path = settings.compare { compareMemory(with: path) }
        for i in baselines.indices where baselines[i].name.hasPrefix("TLS") {
            if let t = tcp { baselines[i].ratio = baselines[i].mbPerSecond / t.mbPerSecond; baselines[i].ratioLabel = String(format: "%.2f×TCP", baselines[i].ratio!) }
        }
    }

    /// Memory growth from a previous (smaller guest) bench JSON: < 10 % per side and mode.
    private mutating func compareMemory(with path: String) {
        guard let data = FileManager.default.contents(atPath: path),
              let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              let old = o["runs"] as? [[String: Any]] else {
            targets.append(BenchTarget(name: "memory growth", detail: "cannot read --compare \(path)", pass: false)); return
        }
        let oldGuest = ((o["corpus"] as? [String: Any])?["memory_bytes"] as? NSNumber)?.uint64Value ?? 0
        for r in runs where r.verified == true {
            guard let prev = old.first(where: { $0["mode"] as? String == r.mode && $0["verified"] as? Bool == true }) else { continue }
            for (side, new) in [("source", r.rssAnonSource), ("destination", r.rssAnonDestination)] {
                guard let new, let before = (prev["rss_anon_peak_\(side)"] as? NSNumber)?.doubleValue, before > 0 else { continue }
                let growth = Double(new) / before - 1
                targets.append(BenchTarget(name: "\(r.mode ?? "?")#\(r.run): \(side) RssAnon grows < 10 % from \(formatBytes(oldGuest)) to \(formatBytes(corpus.memoryBytes))",
                                           detail: String(format: "%.0f → %.0f MiB = %+.1f %%", before / Self.mib, Double(new) / Self.mib, growth * 100),
                                           pass: growth < 0.10))
            }
        }
    }

    // MARK: - Table

    func table() -> String {
        var out: [String] = []
        let s = settings
        out.append("vfio-migrate-bench: guest \(formatBytes(corpus.memoryBytes)) + device state \(formatBytes(corpus.stateBytes)) = \(String(format: "%.0f", Double(corpus.totalBytes) / 1e6)) MB; pages \(corpus.zeroPages) zero / \(corpus.binaryPages) binary / \(corpus.randomPages) random (seed \(s.seed), \(corpus.libraries.count) libraries)")
        out.append("workload \(s.workloadName) every \(s.workloadMs) ms (dirty \(s.dirtyPages) pages, churn \(formatBytes(UInt64(s.churn))) per step), --downtime-ms \(Int(s.downtimeMs)), \(ProcessInfo.processInfo.activeProcessorCount) cores, load average at start \(loadAverage); MB = 10^6 bytes of guest+device data per second of wall time")
        out.append("")
        let header = ["row", "wall s", "MB/s", "wire MiB", "downtime ms", "iter", "RssAnon src/dst MiB", "CPU s src/dst", "ratio", "target"]
        var rows: [[String]] = [header]
        func f(_ v: Double?, _ fmt: String = "%.2f") -> String { v.map { String(format: fmt, $0) } ?? "–" }
        func mib(_ v: UInt64?) -> String { v.map { String(format: "%.0f", Double($0) / Self.mib) } ?? "–" }
        for r in baselines + runs {
            let name = r.kind == "migration" && s.runs > 1 ? "\(r.name) #\(r.run)" : r.name
            let rss = r.rssAnonSource == nil ? "–" :
                r.kind == "migration" ? "\(mib(r.rssAnonSource))/\(mib(r.rssAnonDestination))"
                                      : "\(mib(r.rssAnonSource))/\(mib(r.rssAnonDestination))"
            let cpu = r.cpuSource == nil ? "–" : "\(f(r.cpuSource))/\(f(r.cpuDestination))"
            let iter = r.iterations.map { "\($0)\(r.converged == false ? "*" : "")" } ?? "–"
            let met = r.verified == false ? "✗ \(r.kind == "migration" ? "NOT VERIFIED" : "FAILED")" : r.targetMet.map { $0 ? "✓" : "✗" } ?? ""
            rows.append([name, f(r.wallSeconds), f(r.mbPerSecond, "%.0f"), r.wireBytes.map { String(format: "%.1f", Double($0) / Self.mib) } ?? "–",
                         f(r.downtimeMs, "%.0f"), iter, rss, cpu, r.ratioLabel ?? "", met])
        }
        let widths = header.indices.map { c in rows.map { $0[c].count }.max() ?? 0 }
        for (i, row) in rows.enumerated() {
            out.append(row.indices.map { c in c < 2 && c == 0 ? row[c].padding(toLength: widths[c], withPad: " ", startingAt: 0)
                                                                 : String(repeating: " ", count: widths[c] - row[c].count) + row[c] }.joined(separator: "  "))
            if i == 0 { out.append(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")) }
        }
        if runs.contains(where: { $0.converged == false }) { out.append("* the sender reported that pre-copy did not converge (switched over at the iteration or time limit)") }
        out.append("")
        out.append("targets:")
        for t in targets { out.append("  \(t.pass ? "PASS" : "FAIL")  \(t.name): \(t.detail)") }
        if targets.isEmpty { out.append("  (none evaluated)") }
        if settings.skipBaselines { out.append("  (baselines skipped: ratio targets not evaluated)") }
        return out.joined(separator: "\n")
    }

    // MARK: - JSON

    func json() -> [String: Any] {
        let s = settings
        func row(_ r: BenchRow) -> [String: Any] {
            var o: [String: Any] = ["name": r.name, "kind": r.kind, "run": r.run, "wall_seconds": r.wallSeconds,
                                    "guest_device_bytes": r.corpusBytes, "mb_per_second": r.mbPerSecond]
            func put(_ k: String, _ v: Any?) { if let v { o[k] = v } }
            put("mode", r.mode); put("payload_bytes", r.payloadBytes); put("wire_bytes", r.wireBytes); put("raw_bytes", r.rawBytes)
            put("downtime_ms", r.downtimeMs); put("downtime_ms_destination", r.downtimeMsDestination)
            put("downtime_estimated_ms", r.downtimeEstimatedMs)
            put("iterations", r.iterations); put("converged", r.converged)
            put("rss_anon_peak_source", r.rssAnonSource); put("rss_anon_peak_destination", r.rssAnonDestination)
            put("vm_hwm_source", r.hwmSource); put("vm_hwm_destination", r.hwmDestination)
            put("cpu_seconds_source", r.cpuSource); put("cpu_seconds_destination", r.cpuDestination)
            put("process_wall_seconds", r.processWallSeconds); put("verified", r.verified)
            put("ratio", r.ratio); put("ratio_label", r.ratioLabel); put("targets_met", r.targetMet)
            if !r.problems.isEmpty { o["problems"] = r.problems }
            return o
        }
        var o: [String: Any] = [
            "settings": ["memory_bytes": s.memoryBytes, "state_bytes": s.stateBytes, "compress": s.modes, "workload": s.workloadName,
                         "workload_ms": s.workloadMs, "dirty_pages_per_step": s.dirtyPages, "churn_bytes_per_step": s.churn,
                         "downtime_ms": s.downtimeMs, "runs": s.runs, "seed": s.seed, "cores": ProcessInfo.processInfo.activeProcessorCount,
                         "load_average_at_start": loadAverage] as [String: Any],
            "corpus": ["memory_bytes": corpus.memoryBytes, "state_bytes": corpus.stateBytes, "zero_pages": corpus.zeroPages,
                       "binary_pages": corpus.binaryPages, "random_pages": corpus.randomPages, "libraries": corpus.libraries,
                       "library_bytes_read": corpus.libraryBytes, "generation_seconds": corpus.seconds] as [String: Any],
            "baselines": baselines.map(row),
            "runs": runs.map(row),
            "targets": targets.map { ["name": $0.name, "detail": $0.detail, "pass": $0.pass] as [String: Any] },
            "verified": allVerified,
            "pass": allVerified && targets.allSatisfy(\.pass),
        ]
        if let d = deflate {
            o["zlib1"] = ["seconds": d.seconds, "input_bytes": d.inputBytes, "output_bytes": d.outputBytes,
                          "mb_per_second": d.seconds > 0 ? Double(d.inputBytes) / d.seconds / 1e6 : 0] as [String: Any]
        }
        return o
    }
}
