import ArgumentParser
import CommandLineSupport
import Foundation
import MigrationWire

/// `vfio-migrate-bench`: whole two-process migrations with mutual TLS on a
/// deterministic corpus, run by the sibling `vfio-migrate` binary over
/// 127.0.0.1 and over shaped links between two network namespaces, next to
/// QEMU's own migration of the same guest bytes when QEMU is installed, and
/// the machine's own limits (the project's TLS layer alone, plain TCP, zlib
/// level 1 on one core). Every migration of ours is verified byte for byte.
/// The baselines' processes are this binary's hidden subcommands.
@main
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vfio-migrate-bench",
        abstract: "Benchmark whole migrations (two vfio-migrate processes, mTLS) on loopback and shaped links against QEMU's and the machine's baselines on the same bytes.",
        usage: "vfio-migrate-bench [<options>]",  // the subcommands are the baselines' hidden processes
        discussion: "Build both binaries in release first: swift build -c release && .build/release/vfio-migrate-bench. Shaped links need root; QEMU's rows need qemu-system-x86_64 on PATH (the bench installs nothing). docs/PERFORMANCE.md explains the table and the goals.",
        subcommands: [TLSSink.self, TLSSource.self, TCPSink.self, TCPSource.self])

    @Option(name: .customLong("memory-size"), help: "Guest memory size (at least 1M, a multiple of 4K).")
    var memorySize = ByteCount(bytes: 1 << 30)
    @Option(name: .customLong("state-size"), help: "Device state size (one simulated device; at least 4K, a multiple of 4K).")
    var stateSize = ByteCount(bytes: 256 << 20)
    @Option(help: "Comma-separated compression modes of ours to run, each passed to vfio-migrate send --compress (e.g. none, auto, zlib:1).")
    var compress: String = "none,auto"
    @Option(help: "Comma-separated links: loopback (127.0.0.1), a tbf rate between two namespaces (10gbit, 1gbit, 500mbit; needs root), or all (loopback,10gbit,1gbit).")
    var link: String = "all"
    @Flag(name: .customLong("no-qemu"), help: "Skip QEMU's reference migrations even when qemu-system-x86_64 is installed.")
    var noQemu = false
    // Off by default: QEMU's reference guest is paused, so both sides move the same static bytes (issue 14 measured it so).
    @Option(help: "Workload while pre-copy runs: off (default, like QEMU's paused guest), light (4 pages, 1 KiB state per step), medium (16, 4 KiB), heavy (64, 16 KiB).")
    var workload: Workload = .off
    @Option(name: .customLong("workload-ms"), help: "Workload step interval in ms.")
    var workloadMs: Double = 1
    @Option(name: .customLong("downtime-ms"), help: "The sender's downtime target.")
    var downtimeMs: Double = 300
    @Option(help: "Runs per row and link; the table shows the median.")
    var runs: Int = 3
    @Option(help: "Directory for the corpus and the memory files (default: /dev/shm if it has room, else /tmp).")
    var dir: String?
    @Flag(help: "Keep the corpus directory afterwards.")
    var keep = false
    @Flag(help: "One JSON object with every figure on stdout instead of the table.")
    var json = false
    @Flag(name: .customLong("skip-baselines"), help: "Run only the migrations (no TLS, TCP, zlib baselines; ratios are then absent).")
    var skipBaselines = false
    @Option(help: "Directory with the development certificates.")
    var certs: String = "certs/dev"
    @Option(help: "Corpus seed.")
    var seed: UInt64 = 1
    @Option(name: .customLong("run-timeout"), help: "Seconds after which a migration run is killed and reported as failed.")
    var runTimeout: Double = 900
    @Option(name: .customLong("compare"), help: "A previous vfio-migrate-bench --json output (smaller guest) to evaluate memory growth against.")
    var compare: String?
    @Option(name: .customLong("send-args"), help: "Extra arguments for every migration's send, space-separated; give it with = (--send-args=\"--resume-window 64M\").")
    var sendArgs: String = ""
    @Option(name: .customLong("events-dir"), help: "Keep each migration's JSON events (sender and receiver, one file each) in this directory, e.g. to read auto's choices.")
    var eventsDir: String?

    var modes: [String] {
        compress.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    func validate() throws {
        guard memorySize.bytes >= 1 << 20, memorySize.bytes % 4096 == 0 else {
            throw ValidationError("--memory-size \(memorySize): expected at least 1M and a multiple of 4K")
        }
        guard stateSize.bytes >= 4096, stateSize.bytes % 4096 == 0 else {
            throw ValidationError("--state-size \(stateSize): expected at least 4K and a multiple of 4K")
        }
        guard !modes.isEmpty else { throw ValidationError("--compress: name at least one mode") }
        for m in modes {
            do { _ = try CompressionPolicy(parsing: m) } catch { throw ValidationError("--compress \(m): \(error)") }
        }
        do { _ = try BenchLink.parseList(link) } catch { throw ValidationError("\(error)") }
        guard runs >= 1 else { throw ValidationError("--runs \(runs): expected at least 1") }
        guard workloadMs.isFinite, workloadMs >= 0 else { throw ValidationError("--workload-ms \(workloadMs): expected milliseconds >= 0") }
        guard downtimeMs.isFinite, downtimeMs > 0 else { throw ValidationError("--downtime-ms \(downtimeMs): expected milliseconds > 0") }
        guard runTimeout.isFinite, runTimeout > 0 else { throw ValidationError("--run-timeout \(runTimeout): expected seconds > 0") }
    }

    func run() throws {
        ProcessSetup.apply()
        do {
            var runner = BenchRunner(settings: try BenchSettings(self))
            let report = try runner.run()
            if json {
                let data = try JSONSerialization.data(withJSONObject: report.json(), options: [.sortedKeys, .prettyPrinted])
                FileHandle.standardOutput.write(data + Data("\n".utf8))
                // The table too, for the person watching: stdout stays pure JSON.
                FileHandle.standardError.write(Data((report.table() + "\n").utf8))
            } else {
                print(report.table())
            }
            if !report.allVerified { throw ExitCode(2) }
        } catch let exit as ExitCode {
            throw exit
        } catch {
            FileHandle.standardError.write(Data("vfio-migrate-bench: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}

/// How hard the simulated device works while pre-copy runs.
enum Workload: String, CaseIterable, ExpressibleByArgument {
    case off, light, medium, heavy

    /// `on` is the old spelling of `medium`.
    init?(argument: String) { self.init(rawValue: argument == "on" ? "medium" : argument) }

    /// Guest pages dirtied and device-state bytes changed per step.
    var perStep: (dirtyPages: Int, churnBytes: Int) {
        switch self {
        case .off: return (0, 0)
        case .light: return (4, 1 << 10)
        case .medium: return (16, 4 << 10)
        case .heavy: return (64, 16 << 10)
        }
    }
}

/// The validated options, the certificates and the binaries a run needs.
struct BenchSettings {
    var memoryBytes: UInt64
    var stateBytes: UInt64
    var modes: [String]
    var links: [BenchLink]
    var qemu: Bool
    var dirtyPages: Int
    var churn: Int
    var workloadName: String
    var workloadMs: Double
    var downtimeMs: Double
    var runs: Int
    var baseDir: String?
    var keep: Bool
    var json: Bool
    var skipBaselines: Bool
    var certificates: BenchCertificates
    var executables: BenchExecutables
    var seed: UInt64
    var runTimeout: Double
    var compare: String?
    var extraSendArguments: [String]
    var eventsDir: String?

    init(_ b: Bench) throws(BenchError) {
        memoryBytes = b.memorySize.bytes
        stateBytes = b.stateSize.bytes
        modes = b.modes
        do { links = try BenchLink.parseList(b.link) } catch { links = [.loopback] }  // validated by Bench.validate()
        qemu = !b.noQemu
        (dirtyPages, churn) = b.workload.perStep
        workloadName = b.workload.rawValue
        workloadMs = b.workload == .off ? 0 : b.workloadMs
        downtimeMs = b.downtimeMs
        runs = b.runs
        baseDir = b.dir
        keep = b.keep; json = b.json; skipBaselines = b.skipBaselines
        certificates = try BenchCertificates(directory: b.certs)
        executables = try BenchExecutables.locate()
        seed = b.seed
        runTimeout = b.runTimeout
        compare = b.compare
        extraSendArguments = b.sendArgs.split(separator: " ").map(String.init)
        eventsDir = b.eventsDir
    }
}

/// One row of the result: a migration run or a baseline.
struct BenchRow {
    var name: String
    var kind: String               // "migration" (ours), "qemu" or "baseline"
    var link = BenchLink.loopback.name
    var mode: String?
    var run = 1
    var wallSeconds: Double = 0
    var corpusBytes: UInt64 = 0    // guest + device bytes the row moves or compresses
    var payloadBytes: UInt64?      // bytes pushed (baselines: the non-zero pages; deflate: all)
    var wireBytes: UInt64?
    var rawBytes: UInt64?
    var downtimeMs: Double?
    /// The sender's estimate when it switched over (its convergence model).
    var downtimeEstimatedMs: Double?
    var downtimeMsDestination: Double?
    var iterations: Int?
    var converged: Bool?
    var rssAnonSource: UInt64?
    var rssAnonDestination: UInt64?
    var hwmSource: UInt64?
    var hwmDestination: UInt64?
    var cpuSource: Double?
    var cpuDestination: Double?
    var processWallSeconds: Double?
    var verified: Bool?
    var problems: [String] = []
    var ratio: Double?
    var ratioLabel: String?

    var mbPerSecond: Double { wallSeconds > 0 ? Double(corpusBytes) / wallSeconds / 1e6 : 0 }
}

