import CommandLineSupport
import Foundation
import MigrationEngine

/// Runs the corpus generation, the baselines and the migrations of one bench invocation.
struct BenchRunner {
    let settings: BenchSettings

    func say(_ s: String) { FileHandle.standardError.write(Data("bench: \(s)\n".utf8)) }

    func run() throws -> BenchReport {
        let s = settings
        let dir = try makeDirectory()
        defer {
            if s.keep { say("kept \(dir)") } else { try? FileManager.default.removeItem(atPath: dir) }
        }
        say("corpus: \(formatBytes(s.memoryBytes)) guest memory + \(formatBytes(s.stateBytes)) device state in \(dir)")
        let corpus = try BenchCorpus.generate(directory: dir, memoryBytes: s.memoryBytes, stateBytes: s.stateBytes, seed: s.seed)
        say(String(format: "corpus generated in %.1f s (%d zero, %d binary, %d random pages)", corpus.seconds, corpus.zeroPages, corpus.binaryPages, corpus.randomPages))
        var report = BenchReport(settings: s, corpus: corpus, directory: dir)
        let files = [corpus.memoryPath, corpus.statePath]
        if !s.skipBaselines {
            say("baseline: zlib level 1, one core")
            let d = try benchDeflateBaseline(files: files)
            report.deflate = d
            var row = BenchRow(name: "zlib:1 deflate, 1 core", kind: "baseline", mode: nil)
            row.wallSeconds = d.seconds; row.corpusBytes = corpus.totalBytes; row.payloadBytes = d.inputBytes; row.wireBytes = d.outputBytes
            report.baselines.append(row)
            say("baseline: TLS layer alone (two processes)")
            let certs = ["--certificate-dir", s.certificates.directory]
            report.baselines.append(try pairBaseline(name: "TLS layer (non-zero pages)", sink: ["tls-sink"] + certs,
                                                     source: { ["tls-source", "--connect", "127.0.0.1:\($0)"] + files.flatMap { ["--file", $0] } + certs },
                                                     dir: dir, corpus: corpus))
            say("baseline: plain TCP copy (two processes)")
            report.baselines.append(try pairBaseline(name: "plain TCP (non-zero pages)", sink: ["tcp-sink"],
                                                     source: { ["tcp-source", "--port", "\($0)"] + files.flatMap { ["--file", $0] } },
                                                     dir: dir, corpus: corpus))
        }
        for mode in s.modes {
            for r in 1...s.runs {
                say("migration: --compress \(mode), run \(r)/\(s.runs)")
                var row = try migration(mode: mode, run: r, dir: dir, corpus: corpus)
                row.run = r
                say(String(format: "  %.2f s, %.0f MB/s, downtime %.0f ms, %d iteration(s), %@", row.wallSeconds, row.mbPerSecond,
                           row.downtimeMs ?? -1, row.iterations ?? -1, row.verified == true ? "verified" : "NOT VERIFIED: \(row.problems.joined(separator: "; "))"))
                report.runs.append(row)
            }
        }
        report.evaluate()
        return report
    }

    private func makeDirectory() throws -> String {
        let s = settings
        // corpus + source copy + destination file, the state image and its two dumps, some slack.
        let needed = 3 * s.memoryBytes + 3 * s.stateBytes + (64 << 20)
        func free(_ path: String) -> UInt64 {
            ((try? FileManager.default.attributesOfFileSystem(forPath: path))?[.systemFreeSize] as? NSNumber)?.uint64Value ?? 0
        }
        let base = s.baseDir ?? (free("/dev/shm") >= needed ? "/dev/shm" : NSTemporaryDirectory())
        if free(base) < needed { say("warning: \(base) has \(formatBytes(free(base))) free, the bench needs about \(formatBytes(needed))") }
        let dir = (base as NSString).appendingPathComponent("vfio-migrate-bench-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    /// A sink/source process pair pushing the corpus's non-zero pages over 127.0.0.1.
    private func pairBaseline(name: String, sink: [String], source: (UInt16) -> [String], dir: String, corpus: BenchCorpus) throws -> BenchRow {
        let portFile = "\(dir)/\(sink[0]).port"
        try? FileManager.default.removeItem(atPath: portFile)
        let dst = BenchChild(name: sink[0], executable: settings.executables.bench, arguments: sink + ["--port-file", portFile])
        try dst.start()
        let sampler = BenchSampler(children: [dst])
        defer { sampler.stop() }
        let port: UInt16
        do { port = try benchWaitForPort(portFile, child: dst) } catch { dst.terminate(); throw error }
        let src = BenchChild(name: sink[0].replacingOccurrences(of: "sink", with: "source"), executable: settings.executables.bench, arguments: source(port))
        try src.start()
        let srcSampler = BenchSampler(children: [src])
        let watchdog = Watchdog(seconds: settings.runTimeout, children: [src, dst])
        let sc = src.wait(), dc = dst.wait()
        srcSampler.stop()
        watchdog.cancel()
        var row = BenchRow(name: name, kind: "baseline", mode: nil)
        row.corpusBytes = corpus.totalBytes
        guard sc == 0, dc == 0, let a = src.event("baseline"), let b = dst.event("baseline") else {
            row.verified = false
            row.problems.append("\(name) failed: source exit \(sc): \(src.stderr.prefix(400)) sink exit \(dc): \(dst.stderr.prefix(400))")
            say(row.problems.last!)
            return row
        }
        let sent = (a["bytes"] as? NSNumber)?.uint64Value ?? 0, got = (b["bytes"] as? NSNumber)?.uint64Value ?? 0
        row.verified = sent == got && sent > 0
        if sent != got { row.problems.append("sent \(sent) bytes, received \(got)") }
        // The transfer is done when the sink has read the last byte; the source's figure includes the close.
        row.wallSeconds = max((a["seconds"] as? Double) ?? 0, (b["seconds"] as? Double) ?? 0)
        row.payloadBytes = got
        row.wireBytes = got
        row.rssAnonSource = src.peakRssAnon; row.rssAnonDestination = dst.peakRssAnon
        row.hwmSource = src.peakHWM; row.hwmDestination = dst.peakHWM
        row.cpuSource = src.totalCPU; row.cpuDestination = dst.totalCPU
        row.processWallSeconds = src.wallSeconds
        say(String(format: "  %.2f s for %@ (%.0f MB/s of guest+device bytes)", row.wallSeconds, formatBytes(got), row.mbPerSecond))
        return row
    }

    /// One migration `send` → `receive`, sampled, then verified byte for byte.
    private func migration(mode: String, run: Int, dir: String, corpus: BenchCorpus) throws -> BenchRow {
        let s = settings
        let fm = FileManager.default
        let src = "\(dir)/src.mem", dst = "\(dir)/dst.mem"
        let srcDump = "\(dir)/dump-src", dstDump = "\(dir)/dump-dst", portFile = "\(dir)/receiver.port"
        for p in [src, dst, srcDump, dstDump, portFile] { try? fm.removeItem(atPath: p) }
        // Every run starts from the corpus: the previous run's workload changed the source memory.
        try fm.copyItem(atPath: corpus.memoryPath, toPath: src)
        let state = "state=\(corpus.stateBytes),seed=1,dirty=\(s.dirtyPages),churn=\(s.churn),chunk=1M"
        let receiver = BenchChild(name: "receiver", executable: s.executables.migrate, arguments: [
            "receive", "--listen", "127.0.0.1:0", "--port-file", portFile, "--accept-timeout", "120",
            "--memory", dst, "--memory-size", "\(corpus.memoryBytes)", "--create-memory",
            "--device", "dev0=sim:\(state)", "--dump-state", dstDump, "--json"] + s.certificates.migrateArguments(.destination))
        try receiver.start()
        let rSampler = BenchSampler(children: [receiver])
        let port: UInt16
        do { port = try benchWaitForPort(portFile, child: receiver) } catch { receiver.terminate(); rSampler.stop(); throw error }
        let sender = BenchChild(name: "sender", executable: s.executables.migrate, arguments: [
            "send", "--connect", "127.0.0.1:\(port)", "--memory", src,
            "--device", "dev0=sim:\(state),image=\(corpus.statePath)", "--dump-state", srcDump, "--json",
            "--workload-ms", "\(s.workloadMs)", "--compress", mode, "--downtime-ms", "\(s.downtimeMs)"] + s.certificates.migrateArguments(.source))
        try sender.start()
        let sSampler = BenchSampler(children: [sender])
        let watchdog = Watchdog(seconds: s.runTimeout, children: [sender, receiver])
        let sc = sender.wait(), rc = receiver.wait()
        sSampler.stop(); rSampler.stop()
        let timedOut = watchdog.cancel()

        var row = BenchRow(name: "migrate --compress \(mode)", kind: "migration", mode: mode)
        row.corpusBytes = corpus.totalBytes
        var problems: [String] = []
        if timedOut { problems.append("killed after --run-timeout \(Int(s.runTimeout)) s") }
        if sc != 0 { problems.append("sender exit \(sc): \(sender.event("failed")?["message"] as? String ?? sender.stderr.suffix(400).description)") }
        if rc != 0 { problems.append("receiver exit \(rc): \(receiver.event("failed")?["message"] as? String ?? receiver.stderr.suffix(400).description)") }
        if let st = sender.finishedStats {
            row.wallSeconds = (st["totalSeconds"] as? Double) ?? 0
            row.downtimeMs = st["downtimeMs"] as? Double
            row.iterations = st["iterations"] as? Int
            row.converged = st["converged"] as? Bool
            row.rawBytes = (st["rawBytes"] as? NSNumber)?.uint64Value
            row.wireBytes = (st["wireBytes"] as? NSNumber)?.uint64Value
        } else { problems.append("no finished event from the sender") }
        row.downtimeMsDestination = receiver.finishedStats?["downtimeMs"] as? Double
        row.rssAnonSource = sender.peakRssAnon; row.rssAnonDestination = receiver.peakRssAnon
        row.hwmSource = sender.peakHWM; row.hwmDestination = receiver.peakHWM
        row.cpuSource = sender.migrationCPU; row.cpuDestination = receiver.migrationCPU
        row.processWallSeconds = sender.wallSeconds
        if sc == 0 && rc == 0 {
            // A benchmark of a wrong result is worthless: compare the device state and every guest byte.
            if !filesEqual("\(srcDump)/dev0.state", "\(dstDump)/dev0.state") { problems.append("device state differs between source and destination") }
            if !filesEqual(src, dst) { problems.append("guest memory differs between source and destination") }
        }
        row.problems = problems
        row.verified = problems.isEmpty
        for p in [src, dst, srcDump, dstDump, portFile] { try? fm.removeItem(atPath: p) }
        return row
    }

    private func filesEqual(_ a: String, _ b: String) -> Bool {
        guard let x = FileHandle(forReadingAtPath: a), let y = FileHandle(forReadingAtPath: b) else { return false }
        defer { try? x.close(); try? y.close() }
        while true {
            let p = (try? x.read(upToCount: 4 << 20)) ?? nil, q = (try? y.read(upToCount: 4 << 20)) ?? nil
            if p != q { return false }
            if p == nil || p!.isEmpty { return true }
        }
    }
}
