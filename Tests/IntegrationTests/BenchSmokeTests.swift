import Foundation
import Testing

/// `vfio-migrate bench` end to end on a tiny corpus: the corpus is generated,
/// one migration runs as two processes and is verified byte for byte.
struct BenchSmokeTests {
    @Test func benchProducesAVerifiedResult() throws {
        let dir = NSTemporaryDirectory() + "vfio-migrate-bench-smoke-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: TwoProcessTests.binary)
        p.arguments = ["bench", "--memory-size", "8M", "--state-size", "2M", "--compress", "auto", "--skip-baselines",
                       "--json", "--dir", dir, "--certs", "\(TwoProcessTests.root)/certs/dev", "--run-timeout", "60"]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let (code, o, e) = ChildOutput(stdout: out, stderr: err).wait(for: p)
        #expect(code == 0, "bench: \(String(decoding: e, as: UTF8.self))")
        let report = try #require(try JSONSerialization.jsonObject(with: o) as? [String: Any])
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
        let corpus = try #require(report["corpus"] as? [String: Any])
        #expect(corpus["zero_pages"] as? Int == 640 && corpus["binary_pages"] as? Int == 1280 && corpus["random_pages"] as? Int == 640,
                "25 % zero, 50 % binary, 25 % random over 8 MiB + 2 MiB")
        // --dir is the parent: the bench removes its own corpus directory afterwards.
        #expect((try? FileManager.default.contentsOfDirectory(atPath: dir))?.isEmpty == true)
    }
}
