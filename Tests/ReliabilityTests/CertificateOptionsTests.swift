import Foundation
import Glibc
import Testing
import TestSupport

/// The CLI's certificate rules, as an operator meets them: no defaults, the committed
/// development set only on loopback and only when asked for, keys kept private, and an
/// own certificate that peers would refuse stopped before anything listens or connects.
@Suite(.serialized)
struct CertificateOptionsTests {
    static let receiveArgs = ["receive", "--listen", "127.0.0.1:0", "--device", "gpu0=sim:state=64K,seed=1"]
    static let sendArgs = ["send", "--connect", "127.0.0.1:1", "--device", "gpu0=sim:state=64K,seed=1"]

    @Test(arguments: [receiveArgs, sendArgs])
    func withoutCertificateOptionsTheCommandIsAUsageErrorNamingThem(_ args: [String]) throws {
        let none = try CLIProcess(args)
        #expect(none.wait(timeout: 30) == 64)
        #expect(none.stderr.contains("missing --ca, --cert, --key, --peer-name"), "\(none.stderr)")
        #expect(none.stderr.contains("certs/README.md"))
        let some = try CLIProcess(args + ["--ca", "ca.pem", "--peer-name", "x"])
        #expect(some.wait(timeout: 30) == 64)
        #expect(some.stderr.contains("missing --cert, --key:") || some.stderr.contains("missing --cert, --key "), "\(some.stderr)")
    }

    @Test func developmentSetOffLoopbackIsRefusedWithAndWithoutTheFlag() throws {
        let dir = try CLI.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let listen = ["receive", "--listen", "0.0.0.0:0", "--port-file", "\(dir)/port", "--device", "gpu0=sim:state=64K,seed=1"]
        let devTLS = Array(DevCertificates.arguments("destination", "source").dropLast())  // without --allow-dev-certs
        let without = try CLIProcess(listen + devTLS)
        #expect(without.wait(timeout: 30) == 1)
        #expect(without.stderr.contains("private keys are public") && without.stderr.contains("--allow-dev-certs"), "\(without.stderr)")
        let with = try CLIProcess(listen + devTLS + ["--allow-dev-certs"])
        #expect(with.wait(timeout: 30) == 1)
        #expect(with.stderr.contains("loopback and UNIX-socket addresses only, not on 0.0.0.0:0"), "\(with.stderr)")
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/port"), "nothing listened")
        // The source likewise; 0.0.0.0 reaches only this host were the check missing.
        let send = try CLIProcess(["send", "--connect", "0.0.0.0:1", "--device", "gpu0=sim:state=64K,seed=1"]
                                  + DevCertificates.arguments("source", "destination"))
        #expect(send.wait(timeout: 30) == 1)
        #expect(send.stderr.contains("not on 0.0.0.0:1"), "\(send.stderr)")
    }

    @Test func developmentSetOnLoopbackMigratesAndSaysSo() throws {
        let dir = try CLI.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeGuestMemoryFile("\(dir)/src.mem", pages: 256)
        let (receiver, port) = try CLI.receiver(dir: dir, memory: "1M")
        let sender = try CLI.sender(dir: dir, port: port)
        #expect(sender.wait() == 0, "\(sender.stderr)")
        #expect(receiver.wait() == 0, "\(receiver.stderr)")
        for (side, p) in [("send", sender), ("receive", receiver)] {
            #expect(p.stderr.contains("vfio-migrate \(side): warning: this session uses the development certificates"), "\(p.stderr)")
            let hello = p.events.first { $0["event"] as? String == "hello" }
            #expect(hello?["development_certificates"] as? Bool == true, "\(String(describing: hello))")
            #expect((hello?["warnings"] as? [String])?.contains { $0.contains("development certificates") } == true)
        }
    }

    @Test func privateKeyReadableByOthersIsRefusedWithTheChmodThatFixesIt() throws {
        let pki = try TestPKI.get()
        let dir = try CLI.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let key = "\(dir)/destination-key.pem"
        try FileManager.default.copyItem(atPath: pki.path("destination-key.pem"), toPath: key)
        chmod(key, 0o644)
        let p = try CLIProcess(Self.receiveArgs + ["--port-file", "\(dir)/port", "--ca", pki.path("ca.pem"),
                                                   "--cert", pki.path("destination.pem"), "--key", key, "--peer-name", "source.test"])
        #expect(p.wait(timeout: 30) == 1)
        #expect(p.stderr.contains("readable by group or others (mode 644); run: chmod 600 \(key)"), "\(p.stderr)")
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/port"))
    }

    /// (certificate, side, text the refusal must contain)
    static let unusable: [(String, String, String)] = [
        ("expired", "receive", "expired on"), ("notyet", "receive", "is not valid before"),
        ("clientonly", "receive", "does not permit serverAuth"), ("serveronly", "send", "does not permit clientAuth"),
        ("expired", "send", "expired on"),
    ]

    @Test(arguments: unusable)
    func ownCertificateThatPeersWouldRefuseStopsBeforeListeningOrConnecting(cert: String, side: String, text: String) throws {
        let pki = try TestPKI.get()
        let dir = try CLI.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let tls = pki.cliTLS(cert, peer: side == "receive" ? "source.test" : "destination.test")
        // A sender that got past the check would meet a refused connection on port 1: another message.
        let args = side == "receive" ? Self.receiveArgs + ["--port-file", "\(dir)/port"] : Self.sendArgs
        let p = try CLIProcess(args + tls)
        #expect(p.wait(timeout: 30) == 1)
        #expect(p.stderr.contains(text) && p.stderr.contains(pki.path(cert + ".pem")), "\(p.stderr)")
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/port"))
    }

    @Test func certificateExpiringWithin30DaysIsWarnedAtStartAndInThePeersHelloEvent() throws {
        let pki = try TestPKI.get()
        let dir = try CLI.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeGuestMemoryFile("\(dir)/src.mem", pages: 256)
        let (receiver, port) = try CLI.receiver(dir: dir, memory: "1M", tls: pki.cliTLS("soon", peer: "source.test"))
        let sender = try CLI.sender(dir: dir, port: port, tls: pki.cliTLS("source", peer: "destination.test"))
        #expect(sender.wait() == 0, "\(sender.stderr)")
        #expect(receiver.wait() == 0, "\(receiver.stderr)")
        #expect(receiver.stderr.contains("warning: this host's certificate expires in"), "\(receiver.stderr)")
        let hello = sender.events.first { $0["event"] as? String == "hello" }
        #expect((hello?["warnings"] as? [String])?.contains { $0.contains("the peer's certificate expires in") } == true,
                "\(String(describing: hello))")
        #expect(hello?["development_certificates"] as? Bool == false)
        #expect(hello?["peer_certificate_not_after"] is String)
        #expect(!sender.stderr.contains("this host's certificate"), "the source's own certificate is fine: \(sender.stderr)")
    }
}
