import CommandLineSupport
import Foundation

/// Everything one bench invocation measured, the goals evaluated, and
/// the two renderings (table in BenchTable.swift, JSON here).
struct BenchReport {
    let settings: BenchSettings
    let corpus: BenchCorpus
    let directory: String
    var deflate: (seconds: Double, inputBytes: UInt64, outputBytes: UInt64)?
    var baselines: [BenchRow] = []
    var links: [LinkSummary] = []
    var qemuVersion: String?
    /// Why QEMU's rows are absent, when they are.
    var qemuNote: String?
    var targets: [BenchTarget] = []
    /// The machine is shared: the load when the bench started says how much to trust the figures.
    let loadAverage = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "?"

    static let mib = 1024.0 * 1024.0

    /// Every migration of ours, every link.
    var runs: [BenchRow] { links.flatMap { $0.ours.flatMap(\.runs) } }
    var allVerified: Bool { runs.allSatisfy { $0.verified == true } && baselines.allSatisfy { $0.verified != false } }
    var tcp: BenchRow? { baselines.first { $0.name.hasPrefix("plain TCP") && $0.verified == true } }

    mutating func evaluate() {
        targets = BenchGoals.evaluate(links, downtimeTargetMs: settings.downtimeMs)
        if let path = settings.compare { compareMemory(with: path) }
        for i in baselines.indices where baselines[i].name.hasPrefix("TLS") {
            if let t = tcp { baselines[i].ratio = baselines[i].mbPerSecond / t.mbPerSecond; baselines[i].ratioLabel = String(format: "%.2f×TCP", baselines[i].ratio!) }
        }
    }

    /// Memory growth from a previous (smaller guest) bench JSON (MemoryGrowth).
    private mutating func compareMemory(with path: String) {
        guard let data = FileManager.default.contents(atPath: path),
              let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              let old = o["runs"] as? [[String: Any]] else {
            targets.append(BenchTarget(name: "memory growth", detail: "cannot read --compare \(path)", pass: false)); return
        }
        let oldGuest = ((o["corpus"] as? [String: Any])?["memory_bytes"] as? NSNumber)?.uint64Value ?? 0
        targets += MemoryGrowth.targets(old: old, oldGuest: formatBytes(oldGuest), new: runs, newGuest: formatBytes(corpus.memoryBytes))
    }

    // MARK: - JSON

    static func json(_ r: BenchRow) -> [String: Any] {
        var o: [String: Any] = ["name": r.name, "kind": r.kind, "link": r.link, "run": r.run, "wall_seconds": r.wallSeconds,
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
        put("ratio", r.ratio); put("ratio_label", r.ratioLabel)
        if !r.problems.isEmpty { o["problems"] = r.problems }
        return o
    }

    /// One row of a link's table: medians, and for ours the per-byte ratios to each QEMU mode that completed.
    static func json(_ row: RowSummary, on link: LinkSummary) -> [String: Any] {
        var o: [String: Any] = ["name": row.name, "kind": row.kind, "bytes": row.bytes, "runs": row.runs.count, "verified_runs": row.verified.count,
                                "seconds": row.runs.map(\.wallSeconds)]
        func put(_ k: String, _ v: Any?) { if let v { o[k] = v } }
        put("mode", row.mode); put("median_seconds", row.medianSeconds)
        put("median_mb_per_second", row.medianSeconds.map { Double(row.bytes) / $0 / 1e6 })
        put("median_wire_bytes", row.medianRun?.wireBytes)
        put("median_cpu_seconds_source", row.medianRun?.cpuSource); put("median_cpu_seconds_destination", row.medianRun?.cpuDestination)
        put("worst_downtime_ms", row.worstDowntimeMs); put("cpu_seconds_per_gib", row.cpuSecondsPerGiB)
        put("peak_rss_anon_source", row.peakRssAnon?.source); put("peak_rss_anon_destination", row.peakRssAnon?.destination)
        if row.kind == "migration" {
            var ratios: [String: Double] = [:]
            for q in link.qemu { ratios[q.mode ?? q.name] = LinkSummary.perByteRatio(row, over: q) }
            if !ratios.isEmpty { o["per_byte_ratio_vs_qemu"] = ratios }
            put("per_byte_ratio_vs_qemu_best", link.qemuBest.flatMap { LinkSummary.perByteRatio(row, over: $0) })
        }
        return o
    }

    func json() -> [String: Any] {
        let s = settings
        var o: [String: Any] = [
            "settings": ["memory_bytes": s.memoryBytes, "state_bytes": s.stateBytes, "compress": s.modes, "links": s.links.map(\.name),
                         "workload": s.workloadName, "workload_ms": s.workloadMs, "dirty_pages_per_step": s.dirtyPages,
                         "churn_bytes_per_step": s.churn, "downtime_ms": s.downtimeMs, "runs": s.runs, "seed": s.seed,
                         "cores": ProcessInfo.processInfo.activeProcessorCount, "load_average_at_start": loadAverage] as [String: Any],
            "corpus": ["memory_bytes": corpus.memoryBytes, "state_bytes": corpus.stateBytes, "zero_pages": corpus.zeroPages,
                       "binary_pages": corpus.binaryPages, "random_pages": corpus.randomPages, "libraries": corpus.libraries,
                       "library_bytes_read": corpus.libraryBytes, "generation_seconds": corpus.seconds] as [String: Any],
            "baselines": baselines.map(Self.json),
            "runs": runs.map(Self.json),
            "qemu_runs": links.flatMap { $0.qemu.flatMap(\.runs) }.map(Self.json),
            "links": links.map { l -> [String: Any] in
                var lo: [String: Any] = ["name": l.link.name, "rows": l.rows.map { Self.json($0, on: l) }]
                if let b = l.link.bitsPerSecond { lo["bits_per_second"] = b }
                if let n = l.note { lo["note"] = n }
                return lo
            },
            "targets": targets.map { ["name": $0.name, "detail": $0.detail, "verdict": $0.verdict.rawValue, "pass": $0.pass] as [String: Any] },
            "verified": allVerified,
            "pass": allVerified && targets.allSatisfy(\.pass),
        ]
        if let v = qemuVersion { o["qemu_version"] = v }
        if let n = qemuNote { o["qemu_note"] = n }
        if let d = deflate {
            o["zlib1"] = ["seconds": d.seconds, "input_bytes": d.inputBytes, "output_bytes": d.outputBytes,
                          "mb_per_second": d.seconds > 0 ? Double(d.inputBytes) / d.seconds / 1e6 : 0] as [String: Any]
        }
        return o
    }
}
