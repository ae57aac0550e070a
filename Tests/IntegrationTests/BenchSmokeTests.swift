import Foundation
import Testing
import TestSupport

/// `vfio-migrate-bench` end to end on a tiny corpus: the corpus is generated,
/// one migration runs as two processes of the sibling `vfio-migrate` binary and
/// is verified byte for byte.
struct BenchSmokeTests {
    /// The bench binary SwiftPM built next to `vfio-migrate`.
    static let bench = BuiltBinary.vfioMigrateBench

    static func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, out: Data, err: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        // Both pipes drained at once: a chatty stderr must not block the child.
        let (code, o, e) = ChildOutput(stdout: out, stderr: err).wait(for: p)
        return (code, o, String(decoding: e, as: UTF8.self))
    }

    /// One small bench run (8 MiB guest, one run, no baselines, no QEMU) with its
    /// --dir made and removed around it; `after` sees the directory while it exists.
    static func smallRun(link: String, compress: String, stateSize: String,
                         after: (String) -> Void = { _ in }) throws -> (status: Int32, report: [String: Any]?, err: String) {
        let dir = try makeRunDirectory(prefix: "vfio-migrate-bench-smoke")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let result = try run(bench, ["--memory-size", "8M", "--state-size", stateSize, "--compress", compress, "--skip-baselines",
                                     "--link", link, "--no-qemu", "--runs", "1",
                                     "--json", "--dir", dir, "--certs", DevCertificates.directory, "--run-timeout", "60"])
        after(dir)
        return (result.status, (try? JSONSerialization.jsonObject(with: result.out)) as? [String: Any], result.err)
    }

    @Test func benchProducesAVerifiedResult() throws {
        // --dir is the parent: the bench removes its own corpus directory afterwards.
        var leftOver: [String]?
        let result = try Self.smallRun(link: "loopback", compress: "auto", stateSize: "2M") { leftOver = try? FileManager.default.contentsOfDirectory(atPath: $0) }
        #expect(result.status == 0, "bench: \(result.err)")
        #expect(leftOver?.isEmpty == true)
        let report = try #require(result.report)
        #expect(report["verified"] as? Bool == true)
        let runs = try #require(report["runs"] as? [[String: Any]])
        #expect(runs.count == 1)
        let run = try #require(runs.first)
        #expect(run["verified"] as? Bool == true, "\(run["problems"] ?? "")")
        #expect(run["mode"] as? String == "auto")
        #expect((run["wall_seconds"] as? Double ?? 0) > 0)
        #expect((run["wire_bytes"] as? Int ?? 0) > 0)
        #expect((run["rss_anon_peak_source"] as? Int ?? 0) > 0, "the sampler saw the sender")
        #expect((run["rss_anon_peak_destination"] as? Int ?? 0) > 0, "the sampler saw the receiver")
        #expect(run["link"] as? String == "loopback")
        let links = try #require(report["links"] as? [[String: Any]])
        #expect(links.map { $0["name"] as? String } == ["loopback"])
        let rows = try #require(links.first?["rows"] as? [[String: Any]])
        #expect(rows.map { $0["mode"] as? String } == ["auto"], "one row of ours, no QEMU row under --no-qemu")
        #expect(rows.first?["median_seconds"] as? Double == run["wall_seconds"] as? Double, "the median of one run is that run")
        #expect(report["qemu_note"] as? String == "QEMU rows skipped (--no-qemu)")
        let targets = try #require(report["targets"] as? [[String: Any]])
        #expect(targets.contains { $0["name"] as? String == "loopback: every migration of ours verified byte for byte" && $0["verdict"] as? String == "PASS" })
        let corpus = try #require(report["corpus"] as? [String: Any])
        #expect(corpus["zero_pages"] as? Int == 640 && corpus["binary_pages"] as? Int == 1280 && corpus["random_pages"] as? Int == 640,
                "25 % zero, 50 % binary, 25 % random over 8 MiB + 2 MiB")
    }

    /// Root and iproute2: what the shaped links need (the bench skips them otherwise, and so does this test).
    static let canShape = getuid() == 0 && ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"].contains { FileManager.default.isExecutableFile(atPath: $0) }

    /// A shaped link end to end: namespaces made and removed, both sides in them, the throwaway certificates (the development set is refused off loopback).
    @Test(.enabled(if: canShape, "needs root and iproute2")) func shapedLinkRunsInNamespacesAndRemovesThem() throws {
        let result = try Self.smallRun(link: "1gbit", compress: "none", stateSize: "1M")
        #expect(result.status == 0, "bench: \(result.err)")
        let report = try #require(result.report)
        let run = try #require((report["runs"] as? [[String: Any]])?.first)
        #expect(run["link"] as? String == "1gbit" && run["verified"] as? Bool == true, "\(run["problems"] ?? "")")
        #expect((run["rss_anon_peak_source"] as? Int ?? 0) > 0, "the sampler saw the sender through ip netns exec")
        let pid = try #require(result.err.firstMatch(of: /namespaces vfmb(\d+)-src/)?.1)
        let listing = try Self.run("/usr/bin/env", ["ip", "netns", "list"])
        #expect(!String(decoding: listing.out, as: UTF8.self).contains("vfmb\(pid)-"), "the bench removed its namespaces")
    }

    @Test func benchWithoutTheSiblingBinaryNamesItsPath() throws {
        let dir = try makeRunDirectory(prefix: "vfio-migrate-bench-alone")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.copyItem(atPath: Self.bench, toPath: "\(dir)/vfio-migrate-bench")
        let result = try Self.run("\(dir)/vfio-migrate-bench", ["--memory-size", "1M", "--state-size", "4K", "--certs", DevCertificates.directory])
        #expect(result.status == 1)
        #expect(result.err.contains("\(dir)/vfio-migrate is missing") && result.err.contains("swift build -c release"), "\(result.err)")
    }

    @Test func anUnknownLinkIsAUsageError() throws {
        let result = try Self.run(Self.bench, ["--link", "carrier-pigeon", "--certs", DevCertificates.directory])
        #expect(result.status == 64, "\(result.err)")
        #expect(result.err.contains("--link carrier-pigeon: expected loopback, all, or a rate"), "\(result.err)")
    }

    @Test func theMigrationCLINoLongerCarriesTheBench() throws {
        let result = try Self.run(BuiltBinary.vfioMigrate, ["bench", "--skip-baselines"])
        #expect(result.status == 64, "\(result.err)")
    }
}
