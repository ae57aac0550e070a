import ArgumentParser
import CommandLineSupport
import Foundation
import MigrationEngine
import MigrationTLS
import MigrationWire

/// `vfio-migrate bench`: a whole two-process migration over 127.0.0.1 mTLS on a
/// deterministic corpus, measured against the machine's own limits on the same
/// bytes in the same invocation (the project's TLS layer alone, plain TCP, zlib
/// level 1 on one core). Every migration is verified byte for byte.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmark a whole migration (two processes, loopback mTLS) against TLS, TCP and zlib baselines on the same bytes.",
        discussion: "Build in release first: swift build -c release && .build/release/vfio-migrate bench. README.md, section Benchmark, explains the columns and targets.")

    @Option(name: .customLong("memory-size"), help: "Guest memory size.")
    var memorySize: String = "1G"
    @Option(name: .customLong("state-size"), help: "Device state size (one simulated device).")
    var stateSize: String = "256M"
    @Option(help: "Comma-separated compression modes to run.")
    var compress: String = "none,zlib:1,auto"
    @Option(help: "Workload while pre-copy runs: off, light (4 pages, 1 KiB state per step), medium (16, 4 KiB), heavy (64, 16 KiB).")
    var workload: String = "medium"
    @Option(name: .customLong("workload-ms"), help: "Workload step interval in ms.")
    var workloadMs: Double = 1
    @Option(name: .customLong("downtime-ms"), help: "The sender's downtime target.")
    var downtimeMs: Double = 300
    @Option(help: "Runs per compression mode.")
    var runs: Int = 1
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
    @Option(name: .customLong("compare"), help: "A previous bench --json output (smaller guest) to evaluate memory growth against.")
    var compare: String?

    func run() throws {
        ProcessSetup.apply()
        do {
            let settings = try BenchSettings(self)
            let report = try BenchRunner(settings: settings).run()
            if json {
                let data = try JSONSerialization.data(withJSONObject: report.json(), options: [.sortedKeys, .prettyPrinted])
                FileHandle.standardOutput.write(data + Data("\n".utf8))
                // The table too, for the person watching: stdout stays pure JSON.
                FileHandle.standardError.write(Data((report.table() + "\n").utf8))
            } else {
                print(report.table())
            }
            if !report.allVerified { throw ExitCode(2) }
        } catch let e as CLIError {
            FileHandle.standardError.write(Data("vfio-migrate bench: \(e)\n".utf8))
            throw ExitCode(1)
        }
    }
}

/// The validated options.
struct BenchSettings {
    var memoryBytes: UInt64
    var stateBytes: UInt64
    var modes: [String]
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
    var certs: String
    var seed: UInt64
    var runTimeout: Double
    var compare: String?

    init(_ b: Bench) throws {
        memoryBytes = try parseSize(b.memorySize, what: "--memory-size")
        stateBytes = try parseSize(b.stateSize, what: "--state-size")
        guard memoryBytes >= 1 << 20, memoryBytes % 4096 == 0 else { throw CLIError.config("--memory-size must be at least 1M and a multiple of 4K") }
        guard stateBytes >= 4096, stateBytes % 4096 == 0 else { throw CLIError.config("--state-size must be at least 4K and a multiple of 4K") }
        modes = b.compress.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !modes.isEmpty else { throw CLIError.config("--compress: name at least one mode") }
        for m in modes where (try? CompressionPolicy(parsing: m)) == nil { throw CLIError.config("--compress \(m): expected none, zlib:1..9 or auto") }
        switch b.workload {
        case "off": (dirtyPages, churn) = (0, 0)
        case "light": (dirtyPages, churn) = (4, 1 << 10)
        case "medium", "on": (dirtyPages, churn) = (16, 4 << 10)
        case "heavy": (dirtyPages, churn) = (64, 16 << 10)
        default: throw CLIError.config("--workload \(b.workload): expected off, light, medium or heavy")
        }
        workloadName = b.workload == "on" ? "medium" : b.workload
        workloadMs = b.workload == "off" ? 0 : b.workloadMs
        downtimeMs = b.downtimeMs
        guard b.runs >= 1 else { throw CLIError.config("--runs must be at least 1") }
        runs = b.runs
        baseDir = b.dir
        keep = b.keep; json = b.json; skipBaselines = b.skipBaselines
        certs = URL(fileURLWithPath: b.certs).standardizedFileURL.path
        for f in ["ca.pem", "source.pem", "source-key.pem", "destination.pem", "destination-key.pem"]
        where !FileManager.default.fileExists(atPath: "\(certs)/\(f)") {
            throw CLIError.config("\(certs)/\(f) is missing: run from the repository root or pass --certs DIR")
        }
        seed = b.seed
        runTimeout = b.runTimeout
        compare = b.compare
    }

    func tls(_ me: String, _ peer: String) -> [String] {
        ["--ca", "\(certs)/ca.pem", "--cert", "\(certs)/\(me).pem", "--key", "\(certs)/\(me)-key.pem", "--peer-name", "\(peer).vfio-migrate.test", "--allow-dev-certs"]
    }
}

/// One row of the result: a migration run or a baseline.
struct BenchRow {
    var name: String
    var kind: String               // "migration" or "baseline"
    var mode: String?
    var run = 1
    var wallSeconds: Double = 0
    var corpusBytes: UInt64 = 0    // guest + device bytes the row moves or compresses
    var payloadBytes: UInt64?      // bytes pushed (baselines: the non-zero pages; deflate: all)
    var wireBytes: UInt64?
    var rawBytes: UInt64?
    var downtimeMs: Double?
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
    var targetMet: Bool?

    var mbPerSecond: Double { wallSeconds > 0 ? Double(corpusBytes) / wallSeconds / 1e6 : 0 }
}

struct BenchTarget {
    var name: String
    var detail: String
    var pass: Bool
}
