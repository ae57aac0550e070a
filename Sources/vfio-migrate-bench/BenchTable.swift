import CommandLineSupport
import Foundation

/// The text rendering of a report: header, baselines, one table per link, goals.
extension BenchReport {
    func table() -> String {
        let s = settings
        var out = [
            "vfio-migrate-bench: guest \(formatBytes(corpus.memoryBytes)) + device state \(formatBytes(corpus.stateBytes)) = \(String(format: "%.0f", Double(corpus.totalBytes) / 1e6)) MB; pages \(corpus.zeroPages) zero / \(corpus.binaryPages) binary / \(corpus.randomPages) random (seed \(s.seed), \(corpus.libraries.count) libraries)",
            "workload \(s.workloadName) every \(s.workloadMs) ms (dirty \(s.dirtyPages) pages, churn \(formatBytes(UInt64(s.churn))) per step), --downtime-ms \(Int(s.downtimeMs)), \(ProcessInfo.processInfo.activeProcessorCount) cores, load average at start \(loadAverage)",
            "QEMU: \(qemuVersion ?? qemuNote ?? "not run")",
            "MB/s = 10^6 bytes moved per second (ours: guest + device state; QEMU: guest). per byte = (QEMU s / guest bytes) ÷ (our s / our bytes): > 1 is ours faster",
            "CPU s/GiB: both processes' CPU seconds (migrate command or connect → finished) per GiB moved, median run: what a loaded machine does not distort",
        ]
        if !baselines.isEmpty { out += ["", "baselines (127.0.0.1, one run each)"] + baselineTable() }
        for l in links {
            let how = l.link.bitsPerSecond.map { "two namespaces, veth, tbf \(NamespacePair.tcRate($0)) on the source's egress" } ?? "127.0.0.1"
            out += ["", "link \(l.link.name) (\(how)), median of \(s.runs) run(s)"]
            if l.rows.isEmpty { out.append("  skipped: \(l.note ?? "nothing ran")"); continue }
            out += linkTable(l)
        }
        if runs.contains(where: { $0.converged == false }) { out.append("* the sender reported that pre-copy did not converge (switched over at the iteration or time limit)") }
        out += ["", "goals:"] + targets.map { "  \($0.verdict.rawValue.padding(toLength: 4, withPad: " ", startingAt: 0))  \($0.name): \($0.detail)" }
        if targets.isEmpty { out.append("  (none evaluated)") }
        return out.joined(separator: "\n")
    }

    private func baselineTable() -> [String] {
        let header = ["row", "wall s", "MB/s", "wire MiB", "RssAnon src/dst MiB", "CPU s src/dst", "ratio"]
        return alignedTable(header, baselines.map { r in
            [r.name, f(r.wallSeconds), f(r.mbPerSecond, "%.0f"), mib(r.wireBytes, "%.1f"), pair(r.rssAnonSource, r.rssAnonDestination),
             r.cpuSource == nil ? "–" : "\(f(r.cpuSource))/\(f(r.cpuDestination))", r.verified == false ? "FAILED" : r.ratioLabel ?? ""]
        })
    }

    private func linkTable(_ l: LinkSummary) -> [String] {
        let header = ["row", "median s", "runs s", "MB/s", "wire MiB", "downtime ms", "iter", "RssAnon src/dst MiB", "CPU s src/dst", "CPU s/GiB", "per byte vs QEMU"]
        return alignedTable(header, l.rows.map { row in
            let m = row.medianRun
            let name = row.kind == "migration" ? "ours \(row.mode ?? "?")" : row.name
            let runs = row.runs.map { $0.verified == true ? f($0.wallSeconds) : "✗" }.joined(separator: " ")
            let iter = m?.iterations.map { "\($0)\(m?.converged == false ? "*" : "")" } ?? "–"
            return [name, f(row.medianSeconds), runs, f(row.medianSeconds.map { Double(row.bytes) / $0 / 1e6 }, "%.0f"),
                    mib(m?.wireBytes, "%.1f"), f(row.worstDowntimeMs, "%.0f"), iter, pair(row.peakRssAnon?.source, row.peakRssAnon?.destination),
                    m?.cpuSource == nil ? "–" : "\(f(m?.cpuSource))/\(f(m?.cpuDestination))", f(row.cpuSecondsPerGiB), ratios(row, l)]
        })
    }

    /// "1.42× best (1.80× tls, 1.42× multifd-zstd)" for ours; empty for QEMU's rows.
    private func ratios(_ row: RowSummary, _ l: LinkSummary) -> String {
        guard row.kind == "migration", let best = l.qemuBest, let r = LinkSummary.perByteRatio(row, over: best) else { return "" }
        let each = l.qemu.compactMap { q in LinkSummary.perByteRatio(row, over: q).map { String(format: "%.2f× %@", $0, q.mode?.replacingOccurrences(of: "qemu-", with: "") ?? q.name) } }
        return String(format: "%.2f× best (%@)", r, each.joined(separator: ", "))
    }

    private func f(_ v: Double?, _ fmt: String = "%.2f") -> String { v.map { String(format: fmt, $0) } ?? "–" }
    private func mib(_ v: UInt64?, _ fmt: String = "%.0f") -> String { v.map { String(format: fmt, Double($0) / Self.mib) } ?? "–" }
    private func pair(_ a: UInt64?, _ b: UInt64?) -> String { a == nil && b == nil ? "–" : "\(mib(a))/\(mib(b))" }
}

/// Columns padded to their widest cell: the first left-aligned, the rest right-aligned; a rule under the header.
func alignedTable(_ header: [String], _ rows: [[String]]) -> [String] {
    let all = [header] + rows
    let widths = header.indices.map { c in all.map { $0[c].count }.max() ?? 0 }
    func line(_ row: [String]) -> String {
        row.indices.map { c in
            let pad = String(repeating: " ", count: widths[c] - row[c].count)
            return c == 0 ? row[c] + pad : pad + row[c]
        }.joined(separator: "  ")
    }
    return [line(header), widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")] + rows.map(line)
}
