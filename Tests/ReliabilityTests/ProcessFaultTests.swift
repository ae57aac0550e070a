import Foundation
import TestSupport
import Glibc
import Testing

/// Killed and interrupted processes, the CLI's listening loop, and bounded memory: the real
/// `vfio-migrate` binary as two processes. Device states are the ones each process
/// reads back from its devices after the failure (`device_states` in the JSON
/// `failed` event).
@Suite(.serialized)
struct ProcessFaultTests {
    /// A migration that stays in pre-copy long enough to be interrupted: 8 MiB of guest
    /// memory at 2 MB/s, a running workload, a downtime target it cannot reach.
    static let slow = ["--bandwidth", "2M", "--downtime-ms", "1", "--max-iterations", "100", "--workload-ms", "1"]

    static func states(_ e: [String: Any]?) -> [String: String] { e?["device_states"] as? [String: String] ?? [:] }

    static func startSlowPair(_ dir: String) throws -> (CLIProcess, CLIProcess) {
        try writeGuestMemoryFile("\(dir)/src.mem", pages: 2048)
        // A source that dies or is interrupted cannot send ABORT: the destination keeps
        // the session for its reconnect timeout (PROTOCOL.md §13.4), kept short here.
        let (receiver, port) = try CLI.receiver(dir: dir, memory: "8M", extra: ["--reconnect-timeout", "3"])
        let sender = try CLI.sender(dir: dir, port: port, extra: slow)
        // Interrupt once pre-copy is moving data.
        let moving = sender.waitForEvent(timeout: 60) { $0["event"] as? String == "progress" || $0["event"] as? String == "iteration" }
        #expect(moving != nil, "the sender never reached pre-copy: \(sender.stderr)")
        return (sender, receiver)
    }

    @Test func sigkillOfTheSenderMidMigrationLeavesTheDestinationStopped() throws {
        let dir = try CLI.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (sender, receiver) = try Self.startSlowPair(dir)
        sender.signal(SIGKILL)
        #expect(sender.wait() == 128 + SIGKILL)
        let started = Date()
        #expect(receiver.wait(timeout: 60) == 2, "\(receiver.stderr)")
        #expect(Date().timeIntervalSince(started) < 20, "a dead peer is noticed without waiting for --peer-timeout")
        let f = receiver.failed
        #expect(f?["phase"] as? String == "precopy", "\(String(describing: f))")
        #expect((f?["cause"] as? String ?? "").contains("TLS"), "\(String(describing: f))")
        #expect(Self.states(f) == ["gpu0": "STOPPED", "nic0": "STOPPED"], "\(String(describing: f))")
    }

    @Test func sigkillOfTheReceiverMidMigrationRollsTheSourceBack() throws {
        let dir = try CLI.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (sender, receiver) = try Self.startSlowPair(dir)
        receiver.signal(SIGKILL)
        #expect(receiver.wait() == 128 + SIGKILL)
        #expect(sender.wait(timeout: 60) == 2, "\(sender.stderr)")
        let f = sender.failed
        #expect(["precopy", "stopcopy"].contains(f?["phase"] as? String ?? ""), "\(String(describing: f))")
        #expect((f?["cause"] as? String ?? "").contains("TLS"), "\(String(describing: f))")
        #expect(Self.states(f) == ["gpu0": "RUNNING", "nic0": "RUNNING"], "read back after the rollback: \(String(describing: f))")
    }

    @Test func sigintOnTheSenderBeforeCommitCancelsAndRollsBack() throws {
        let dir = try CLI.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (sender, receiver) = try Self.startSlowPair(dir)
        sender.signal(SIGINT)
        #expect(sender.wait(timeout: 60) == 2, "\(sender.stderr)")
        #expect(receiver.wait(timeout: 60) == 2, "\(receiver.stderr)")
        let s = sender.failed, r = receiver.failed
        #expect((s?["cause"] as? String) == "cancelled by the operator", "\(String(describing: s))")
        #expect(Self.states(s) == ["gpu0": "RUNNING", "nic0": "RUNNING"], "\(String(describing: s))")
        #expect((r?["cause"] as? String ?? "").contains("peer aborted (cancelled)"), "\(String(describing: r))")
        #expect(Self.states(r) == ["gpu0": "STOPPED", "nic0": "STOPPED"], "\(String(describing: r))")
    }

    /// `--accept-timeout` with `--keep-listening` is per wait: sources that keep
    /// arriving keep the receiver listening past it; once none comes, it gives up (exit 1).
    @Test func acceptTimeoutIsPerWaitWhileListening() throws {
        let pki = try TestPKI.get()
        let dir = try CLI.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (receiver, port) = try CLI.receiver(dir: dir, extra: ["--keep-listening", "--peer-timeout", "10", "--accept-timeout", "3"],
                                                tls: pki.cliTLS("destination", peer: "source.test"))
        let started = ContinuousClock.now
        for _ in 0..<4 {
            _ = HostilePeer.commitBeforeComplete.attack(port: port, pki: pki)   // an authenticated session that fails
            usleep(1_500_000)
        }
        #expect(ContinuousClock.now - started > .seconds(5), "the sessions spanned more than one --accept-timeout")
        #expect(receiver.process.isRunning, "still listening after \(ContinuousClock.now - started): \(receiver.stderr)")
        #expect(receiver.wait(timeout: 60) == 1, "gives up once no source comes: \(receiver.stderr)")
        #expect((receiver.failed?["cause"] as? String ?? "").contains("accept-timeout"), "\(String(describing: receiver.failed))")
    }

    /// A listening receiver (`--keep-listening`) refuses every hostile peer, a sender
    /// with a certificate from another CA, and then migrates a good sender.
    @Test func listeningReceiverRefusesHostilePeersThenMigratesAGoodSource() throws {
        let pki = try TestPKI.get()
        let dir = try CLI.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeGuestMemoryFile("\(dir)/src.mem", pages: 1024)
        let (receiver, port) = try CLI.receiver(dir: dir, extra: ["--keep-listening", "--peer-timeout", "10", "--dump-state", "\(dir)/dst"],
                                                tls: pki.cliTLS("destination", peer: "source.test"))
        // A session-level peer first, so the untouched-device cases read back STOPPED
        // rather than a fresh simulated device's initial RUNNING.
        let order: [HostilePeer] = [.oversizedFrameHeader] + HostilePeer.allCases.filter { $0 != .oversizedFrameHeader }
        for peer in order {
            let report = peer.attack(port: port, pki: pki)
            #expect(!report.gotReady, "\(peer)")
            #expect(receiver.process.isRunning, "the receiver survived \(peer): \(receiver.stderr)")
        }
        // A real sender with a certificate from another CA: refused in the handshake, exit 1.
        let stranger = try CLI.sender(dir: dir, port: port, tls: pki.cliTLS("stranger", peer: "destination.test"))
        #expect(stranger.wait() == 1, "\(stranger.stderr)")
        // A TLS 1.3 client finishes its side of the handshake before the server judges its
        // certificate: it learns of the refusal when it reads the HELLO.
        #expect(["handshake", "hello"].contains(stranger.failed?["phase"] as? String ?? ""), "\(String(describing: stranger.failed))")
        #expect((stranger.failed?["cause"] as? String ?? "").contains("unknown CA"), "\(String(describing: stranger.failed))")
        #expect(Self.states(stranger.failed) == ["gpu0": "RUNNING", "nic0": "RUNNING"], "never left RUNNING")

        // A sender that refuses the receiver's certificate (wrong expected name): its own
        // handshake fails, named as such, nothing started.
        let picky = try CLI.sender(dir: dir, port: port, tls: pki.cliTLS("source", peer: "someone-else.test"))
        #expect(picky.wait() == 1, "\(picky.stderr)")
        #expect(picky.failed?["phase"] as? String == "handshake", "\(String(describing: picky.failed))")
        #expect((picky.failed?["cause"] as? String ?? "").hasPrefix("TLS: "), "\(String(describing: picky.failed))")
        #expect((picky.failed?["cause"] as? String ?? "").contains("someone-else.test"), "\(String(describing: picky.failed))")

        // The good one.
        let good = try CLI.sender(dir: dir, port: port, extra: ["--dump-state", "\(dir)/src", "--downtime-ms", "1000"],
                                  tls: pki.cliTLS("source", peer: "destination.test"))
        #expect(good.wait() == 0, "\(good.stderr)")
        #expect(receiver.wait() == 0, "\(receiver.stderr)")
        for name in ["gpu0", "nic0"] {
            let a = FileManager.default.contents(atPath: "\(dir)/src/\(name).state")
            #expect(a != nil && a == FileManager.default.contents(atPath: "\(dir)/dst/\(name).state"), "\(name) differs")
        }
        #expect(FileManager.default.contents(atPath: "\(dir)/src.mem") == FileManager.default.contents(atPath: "\(dir)/dst.mem"))

        let events = receiver.events
        let refused = events.filter { $0["event"] as? String == "refused" }.compactMap { $0["reason"] as? String }
        for peer in HostilePeer.allCases where peer.isHandshakeLevel {
            #expect(refused.contains { $0.contains(peer.expectedText) }, "\(peer) refused with a clear reason: \(refused)")
        }
        #expect(refused.contains { $0.contains("does not chain to the configured CA") })
        let failed = events.filter { $0["event"] as? String == "failed" }
        #expect(failed.count == HostilePeer.allCases.filter { !$0.isHandshakeLevel }.count, "\(failed)")
        for f in failed {
            #expect(Self.states(f) == ["gpu0": "STOPPED", "nic0": "STOPPED"], "\(f)")
            #expect([1, 2].contains(f["exit_code"] as? Int ?? 0), "\(f)")
        }
        for peer in HostilePeer.allCases where !peer.isHandshakeLevel {
            #expect(failed.contains { ($0["cause"] as? String ?? "").contains(peer.expectedText) }, "\(peer): \(failed.map { $0["cause"] ?? "" })")
        }
    }

    /// A slow network (the proxy forwards ~1 MB/s) must slow the sender down, not make it
    /// buffer: its anonymous memory stays bounded while 96 MiB of guest memory wait.
    @Test func slowNetworkKeepsTheSenderMemoryBounded() throws {
        let dir = try CLI.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let size = 96 << 20
        guard let random = FileHandle(forReadingAtPath: "/dev/urandom")?.readData(ofLength: size) else { return }
        try random.write(to: URL(fileURLWithPath: "\(dir)/src.mem"))
        let (receiver, port) = try CLI.receiver(dir: dir, memory: "96M")
        let proxy = try FaultProxy(targetPort: port, throttleSecondsPerChunk: 0.05)
        defer { proxy.close() }
        let sender = try CLI.sender(dir: dir, port: proxy.port, extra: ["--compress", "none", "--workload-ms", "0"])
        #expect(sender.waitForEvent(timeout: 60) { $0["event"] as? String == "phase" && $0["phase"] as? String == "precopy" } != nil)
        var samples: [Int] = []
        for _ in 0..<30 {
            usleep(100_000)
            if let anon = Self.rssAnonKiB(sender.pid) { samples.append(anon) }
        }
        let forwarded = proxy.forwardedRawBytes(.toReceiver)
        sender.signal(SIGINT)
        #expect(sender.wait(timeout: 60) == 2, "\(sender.stderr)")
        _ = receiver.wait(timeout: 60)
        guard let first = samples.first, let peak = samples.max() else { Issue.record("no samples"); return }
        #expect(forwarded < 24 << 20, "the proxy throttled: \(forwarded) bytes passed in 3 s")
        // Without backpressure the sender would read ahead toward 96 MiB; with it, only the
        // pipeline window (a few MiB) and the socket buffers are in flight.
        #expect(peak - first < 32 << 10, "sender RssAnon grew from \(first) KiB to \(peak) KiB while throttled")
    }

    static func rssAnonKiB(_ pid: Int32) -> Int? {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in s.split(separator: "\n") where line.hasPrefix("RssAnon:") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        }
        return nil
    }
}
