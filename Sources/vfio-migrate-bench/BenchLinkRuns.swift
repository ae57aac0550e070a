import CommandLineSupport
import Foundation

/// The per-link part of a bench invocation: on each link, `--runs` rounds of
/// every mode of ours and every QEMU case, interleaved, so a change in the
/// shared machine's load spreads over all rows instead of landing on one.
extension BenchRunner {
    /// QEMU's reference runs, when they can run here; else why not.
    struct QemuAvailability {
        var run: QemuRun?
        var version: String?
        var note: String?
    }

    /// Switches every migration to a certificate set made for this invocation; returns
    /// QEMU's directory of the same keys, or nil (no openssl: the development set, loopback only).
    mutating func useThrowawayCertificates(dir: String) -> String? {
        guard BenchCommand.onPath("openssl") else {
            say("openssl is not on PATH: the development certificates from \(settings.certificates.directory), loopback only")
            return nil
        }
        do {
            let (ours, qemu) = try BenchPKI.create(in: dir)
            settings.certificates = ours
            return qemu
        } catch {
            say("warning: \(error); the development certificates, loopback only")
            return nil
        }
    }

    func qemuReference(dir: String, corpus: BenchCorpus, certificates: String?) -> QemuAvailability {
        let exe = QemuCommandLine.executable
        guard settings.qemu else { return QemuAvailability(note: "QEMU rows skipped (--no-qemu)") }
        guard BenchCommand.onPath(exe) else {
            return QemuAvailability(note: "\(exe) is not on PATH: QEMU rows skipped (Debian: apt-get install qemu-system-x86; the bench installs nothing)")
        }
        guard corpus.memoryBytes % (1 << 20) == 0 else { return QemuAvailability(note: "--memory-size is not a whole number of MiB: QEMU rows skipped") }
        guard let certs = certificates else { return QemuAvailability(note: "no certificates for QEMU (openssl missing or failed): QEMU rows skipped") }
        let version = (try? BenchCommand.run([exe, "--version"]))?.split(separator: "\n").first.map(String.init)
        say("QEMU reference: \(version ?? exe), certificates in \(certs)")
        let line = QemuCommandLine(guestMiB: corpus.memoryBytes >> 20, guestFile: corpus.memoryPath,
                                   destinationFile: "\(dir)/qemu-destination.mem", certificateDirectory: certs)
        return QemuAvailability(run: QemuRun(commandLine: line, downtimeMs: settings.downtimeMs, timeoutSeconds: settings.runTimeout), version: version)
    }

    /// Every row on one link; a shaped link that cannot be set up is skipped with its reason.
    func measure(_ link: BenchLink, lab: ShapedLinkLab, qemu: QemuRun?, dir: String, corpus: BenchCorpus) throws -> LinkSummary {
        var endpoints = LinkEndpoints.loopback
        if link.isShaped {
            if let why = ShapedLinkLab.unavailableReason()
                ?? (settings.certificates.development ? "the development certificates are refused off loopback, and no throwaway set could be made" : nil) {
                say("link \(link.name) skipped: \(why)")
                return LinkSummary(link: link, runs: [], note: why)
            }
            do { endpoints = try lab.shape(link) } catch {
                say("link \(link.name) skipped: \(error)")
                return LinkSummary(link: link, runs: [], note: "\(error)")
            }
        }
        var runs: [BenchRow] = []
        for r in 1...settings.runs {
            for mode in settings.modes {
                say("\(link.name): migration --compress \(mode), run \(r)/\(settings.runs)")
                runs.append(labelled(try migration(mode: mode, link: endpoints, dir: dir, corpus: corpus), link: link, run: r))
            }
            guard let qemu else { continue }
            for c in QemuCase.allCases {
                say("\(link.name): \(c.title), run \(r)/\(settings.runs)")
                runs.append(labelled(qemu.run(c, endpoints: endpoints, guestBytes: corpus.memoryBytes), link: link, run: r))
            }
        }
        return LinkSummary(link: link, runs: runs)
    }

    private func labelled(_ row: BenchRow, link: BenchLink, run: Int) -> BenchRow {
        var row = row
        (row.link, row.run) = (link.name, run)
        let outcome = row.verified == true ? (row.kind == "qemu" ? "completed" : "verified") : "FAILED: \(row.problems.joined(separator: "; "))"
        say(String(format: "  %.2f s, %.0f MB/s, downtime %.0f ms, CPU %.2f/%.2f s, %@", row.wallSeconds, row.mbPerSecond,
                   row.downtimeMs ?? -1, row.cpuSource ?? -1, row.cpuDestination ?? -1, outcome))
        return row
    }
}
