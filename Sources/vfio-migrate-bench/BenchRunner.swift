import CommandLineSupport
import Foundation
import MigrationEngine

/// Runs the corpus generation, the baselines and the migrations of one bench invocation.
struct BenchRunner {
    /// `certificates` changes once, to the invocation's throwaway set, before anything runs.
    var settings: BenchSettings

    func say(_ s: String) { FileHandle.standardError.write(Data("bench: \(s)\n".utf8)) }

    mutating func run() throws -> BenchReport {
        BenchInterrupt.shared.install()
        let s = settings
        let dir = try makeDirectory()
        defer {
            BenchInterrupt.shared.unregister("directory")
            if s.keep { say("kept \(dir)") } else { try? FileManager.default.removeItem(atPath: dir) }
        }
        // Registered first, so it runs last on an interrupt: after the children that write into it have stopped.
        if !s.keep {
            BenchInterrupt.shared.register("directory") {
                // The main thread may be copying into it still: retry for up to a second.
                for _ in 0..<10 where FileManager.default.fileExists(atPath: dir) {
                    try? FileManager.default.removeItem(atPath: dir)
                    usleep(100_000)
                }
            }
        }
        say("corpus: \(formatBytes(s.memoryBytes)) guest memory + \(formatBytes(s.stateBytes)) device state in \(dir)")
        let corpus = try BenchCorpus.generate(directory: dir, memoryBytes: s.memoryBytes, stateBytes: s.stateBytes, seed: s.seed)
        say(String(format: "corpus generated in %.1f s (%d zero, %d binary, %d random pages)", corpus.seconds, corpus.zeroPages, corpus.binaryPages, corpus.randomPages))
        let qemuCertificates = useThrowawayCertificates(dir: "\(dir)/pki")
        var report = BenchReport(settings: settings, corpus: corpus, directory: dir)
        if !s.skipBaselines { try runBaselines(into: &report, dir: dir) }
        let qemu = qemuReference(dir: dir, corpus: corpus, certificates: qemuCertificates)
        (report.qemuVersion, report.qemuNote) = (qemu.version, qemu.note)
        if let note = qemu.note { say(note) }
        let lab = ShapedLinkLab(say: say)
        defer { lab.tearDown() }
        for link in s.links {
            report.links.append(try measure(link, lab: lab, qemu: qemu.run, dir: dir, corpus: corpus))
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

    // MARK: - Baselines

    private func runBaselines(into report: inout BenchReport, dir: String) throws {
        let corpus = report.corpus
        let files = [corpus.memoryPath, corpus.statePath]
        let certs = ["--certificate-dir", settings.certificates.directory]
        say("baseline: zlib level 1, one core")
        let d = try benchDeflateBaseline(files: files)
        report.deflate = d
        var row = BenchRow(name: "zlib:1 deflate, 1 core", kind: "baseline", mode: nil)
        row.wallSeconds = d.seconds; row.corpusBytes = corpus.totalBytes; row.payloadBytes = d.inputBytes; row.wireBytes = d.outputBytes
        report.baselines.append(row)
        say("baseline: TLS layer alone (two processes)")
        report.baselines.append(try pairBaseline(name: "TLS layer (non-zero pages)", sink: ["tls-sink"] + certs,
                                                 source: { ["tls-source", "--connect", "127.0.0.1:\($0)"] + files.flatMap { ["--file", $0] } + certs },
                                                 dir: dir, corpus: corpus))
        say("baseline: plain TCP copy (two processes)")
        report.baselines.append(try pairBaseline(name: "plain TCP (non-zero pages)", sink: ["tcp-sink"],
                                                 source: { ["tcp-source", "--port", "\($0)"] + files.flatMap { ["--file", $0] } },
                                                 dir: dir, corpus: corpus))
    }

    /// A sink/source process pair (this binary's hidden subcommands) pushing the
    /// corpus's non-zero pages over 127.0.0.1.
    private func pairBaseline(name: String, sink: [String], source: (UInt16) -> [String], dir: String, corpus: BenchCorpus) throws -> BenchRow {
        let bench = settings.executables.bench
        let portFile = "\(dir)/\(sink[0]).port"
        try? FileManager.default.removeItem(atPath: portFile)
        let dst = BenchChild(name: sink[0], executable: bench, arguments: sink + ["--port-file", portFile])
        try dst.start()
        let sampler = BenchSampler(children: [dst])
        defer { sampler.stop() }
        let port: UInt16
        do { port = try benchWaitForPort(portFile, child: dst) } catch { dst.terminate(); throw error }
        let src = BenchChild(name: sink[0].replacingOccurrences(of: "sink", with: "source"), executable: bench, arguments: source(port))
        try src.start()
        let srcSampler = BenchSampler(children: [src])
        let watchdog = Watchdog(seconds: settings.runTimeout, children: [src, dst])
        let sc = src.wait(), dc = dst.wait()
        srcSampler.stop()
        watchdog.cancel()
        return baselineRow(name: name, corpus: corpus, source: (src, sc), sink: (dst, dc))
    }

    /// The row of a finished baseline pair: bytes agree, the slower side's time.
    private func baselineRow(name: String, corpus: BenchCorpus, source: (child: BenchChild, status: Int32), sink: (child: BenchChild, status: Int32)) -> BenchRow {
        let (src, dst) = (source.child, sink.child)
        var row = BenchRow(name: name, kind: "baseline", mode: nil)
        row.corpusBytes = corpus.totalBytes
        guard source.status == 0, sink.status == 0, let a = src.event("baseline"), let b = dst.event("baseline") else {
            row.verified = false
            row.problems.append("\(name) failed: source exit \(source.status): \(src.stderr.prefix(400)) sink exit \(sink.status): \(dst.stderr.prefix(400))")
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

    // MARK: - Migrations

    /// The files of one migration run, all inside the bench's directory.
    private struct RunFiles {
        let src, dst, srcDump, dstDump, portFile: String
        init(dir: String) {
            (src, dst) = ("\(dir)/src.mem", "\(dir)/dst.mem")
            (srcDump, dstDump, portFile) = ("\(dir)/dump-src", "\(dir)/dump-dst", "\(dir)/receiver.port")
        }
        var all: [String] { [src, dst, srcDump, dstDump, portFile] }
        func removeAll() { for p in all { try? FileManager.default.removeItem(atPath: p) } }
    }

    /// One `vfio-migrate send` → `vfio-migrate receive` across `link`, sampled, then verified byte for byte.
    func migration(mode: String, link: LinkEndpoints, dir: String, corpus: BenchCorpus) throws -> BenchRow {
        let files = RunFiles(dir: dir)
        files.removeAll()
        defer { files.removeAll() }
        // Every run starts from the corpus: the previous run's workload changed the source memory.
        try FileManager.default.copyItem(atPath: corpus.memoryPath, toPath: files.src)
        let state = "state=\(corpus.stateBytes),seed=1,dirty=\(settings.dirtyPages),churn=\(settings.churn),chunk=1M"
        let receiver = BenchChild(name: "receiver", executable: settings.executables.migrate,
                                  arguments: receiveArguments(files, state: state, memoryBytes: corpus.memoryBytes, address: link.destinationAddress),
                                  prefix: link.destinationPrefix)
        try receiver.start()
        let rSampler = BenchSampler(children: [receiver])
        let port: UInt16
        do { port = try benchWaitForPort(files.portFile, child: receiver) } catch { receiver.terminate(); rSampler.stop(); throw error }
        let sender = BenchChild(name: "sender", executable: settings.executables.migrate,
                                arguments: sendArguments(files, state: "\(state),image=\(corpus.statePath)", address: "\(link.destinationAddress):\(port)", mode: mode),
                                prefix: link.sourcePrefix)
        try sender.start()
        let sSampler = BenchSampler(children: [sender])
        let watchdog = Watchdog(seconds: settings.runTimeout, children: [sender, receiver])
        let sc = sender.wait(), rc = receiver.wait()
        sSampler.stop(); rSampler.stop()
        let timedOut = watchdog.cancel()

        keepEvents(mode: mode, link: link, children: [sender, receiver])
        var row = migrationRow(mode: mode, corpus: corpus, sender: (sender, sc), receiver: (receiver, rc))
        if timedOut { row.problems.insert("killed after --run-timeout \(Int(settings.runTimeout)) s", at: 0) }
        if sc == 0 && rc == 0 { row.problems += differences(files) }
        row.verified = row.problems.isEmpty
        return row
    }

    /// `--events-dir`: each child's events as JSON lines, named by mode, link and time.
    private func keepEvents(mode: String, link: LinkEndpoints, children: [BenchChild]) {
        guard let dir = settings.eventsDir else { return }
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let stamp = Int(Date().timeIntervalSince1970 * 1000)
        let where_ = link.destinationAddress == "127.0.0.1" ? "loopback" : link.destinationAddress
        for child in children {
            let lines = child.allEvents.compactMap { try? JSONSerialization.data(withJSONObject: $0, options: [.sortedKeys]) }
            let text = lines.map { String(decoding: $0, as: UTF8.self) }.joined(separator: "\n") + "\n"
            let name = "\(mode.replacingOccurrences(of: ":", with: "_"))-\(where_)-\(stamp)-\(child.name).jsonl"
            FileManager.default.createFile(atPath: "\(dir)/\(name)", contents: Data(text.utf8))
        }
    }

    private func receiveArguments(_ f: RunFiles, state: String, memoryBytes: UInt64, address: String) -> [String] {
        ["receive", "--listen", "\(address):0", "--port-file", f.portFile, "--accept-timeout", "120",
         "--memory", f.dst, "--memory-size", "\(memoryBytes)", "--create-memory",
         "--device", "dev0=sim:\(state)", "--dump-state", f.dstDump, "--json"] + settings.certificates.migrateArguments(.destination)
    }

    private func sendArguments(_ f: RunFiles, state: String, address: String, mode: String) -> [String] {
        ["send", "--connect", address, "--memory", f.src,
         "--device", "dev0=sim:\(state)", "--dump-state", f.srcDump, "--json",
         "--workload-ms", "\(settings.workloadMs)", "--compress", mode, "--downtime-ms", "\(settings.downtimeMs)"]
            + settings.certificates.migrateArguments(.source) + settings.extraSendArguments
    }

    /// The figures both processes reported and the samples taken of them.
    private func migrationRow(mode: String, corpus: BenchCorpus, sender: (child: BenchChild, status: Int32), receiver: (child: BenchChild, status: Int32)) -> BenchRow {
        let (s, r) = (sender.child, receiver.child)
        var row = BenchRow(name: "migrate --compress \(mode)", kind: "migration", mode: mode)
        row.corpusBytes = corpus.totalBytes
        if sender.status != 0 { row.problems.append("sender exit \(sender.status): \(s.event("failed")?["message"] as? String ?? s.stderr.suffix(400).description)") }
        if receiver.status != 0 { row.problems.append("receiver exit \(receiver.status): \(r.event("failed")?["message"] as? String ?? r.stderr.suffix(400).description)") }
        if let st = s.finishedStats {
            row.wallSeconds = (st["totalSeconds"] as? Double) ?? 0
            row.downtimeMs = st["downtimeMs"] as? Double
            row.downtimeEstimatedMs = (st["downtimeComparison"] as? [String: Any])?["estimatedMs"] as? Double
            row.iterations = st["iterations"] as? Int
            row.converged = st["converged"] as? Bool
            row.rawBytes = (st["rawBytes"] as? NSNumber)?.uint64Value
            row.wireBytes = (st["wireBytes"] as? NSNumber)?.uint64Value
        } else { row.problems.append("no finished event from the sender") }
        row.downtimeMsDestination = r.finishedStats?["downtimeMs"] as? Double
        row.rssAnonSource = s.peakRssAnon; row.rssAnonDestination = r.peakRssAnon
        row.hwmSource = s.peakHWM; row.hwmDestination = r.peakHWM
        row.cpuSource = s.migrationCPU; row.cpuDestination = r.migrationCPU
        row.processWallSeconds = s.wallSeconds
        return row
    }

    /// A benchmark of a wrong result is worthless: compare the device state and every guest byte.
    private func differences(_ f: RunFiles) -> [String] {
        var problems: [String] = []
        if !benchFilesEqual("\(f.srcDump)/dev0.state", "\(f.dstDump)/dev0.state") { problems.append("device state differs between source and destination") }
        if !benchFilesEqual(f.src, f.dst) { problems.append("guest memory differs between source and destination") }
        return problems
    }
}
