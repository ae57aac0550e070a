import Foundation
import Glibc
import Testing
@testable import MigrationTLS
import TestSupport

/// The rules that keep a production context from starting on certificates that prove
/// nothing (the committed development set), that leak (a readable key), or that peers
/// would refuse (wrong extendedKeyUsage).
extension TLSTests {
    @Suite struct CertificatePolicy {
        static let dev = DevCertificates.directory

        static func devConfig(_ me: String, peer: String, allow: Bool) -> TLSConfiguration {
            TLSConfiguration(caFile: "\(dev)/ca.pem", certificateFile: "\(dev)/\(me).pem",
                             privateKeyFile: "\(dev)/\(me)-key.pem", peerName: "\(peer).vfio-migrate.test",
                             allowDevelopmentCertificates: allow)
        }

        @Test func developmentSetIsRefusedUnlessAllowed() throws {
            #expect(throws: TLSError.developmentCertificatesRefused(path: "\(Self.dev)/ca.pem")) {
                try TLSContext(configuration: Self.devConfig("destination", peer: "source", allow: false), role: .server)
            }
            let allowed = try TLSContext(configuration: Self.devConfig("destination", peer: "source", allow: true), role: .server)
            #expect(allowed.usesDevelopmentCertificates)
        }

        @Test func developmentLeafUnderAnotherCAIsRefusedToo() throws {
            let pki = try TestPKI.get()
            var config = pki.clientConfig()
            config.certificateFile = "\(Self.dev)/source.pem"
            config.privateKeyFile = "\(Self.dev)/source-key.pem"
            #expect(throws: TLSError.developmentCertificatesRefused(path: config.certificateFile)) {
                try TLSContext(configuration: config, role: .client)
            }
        }

        @Test func ownCertificatesAreNotDevelopmentCertificates() throws {
            let pki = try TestPKI.get()
            let context = try TLSContext(configuration: pki.clientConfig(), role: .client)
            #expect(!context.usesDevelopmentCertificates)
            #expect(try context.checkEndpoint(Endpoint(parsing: "192.0.2.1:7070")) == ())
        }

        @Test func developmentSetListensAndConnectsOnLoopbackOnly() throws {
            let server = try TLSContext(configuration: Self.devConfig("destination", peer: "source", allow: true), role: .server)
            let client = try TLSContext(configuration: Self.devConfig("source", peer: "destination", allow: true), role: .client)
            #expect(throws: TLSError.developmentCertificatesOffLoopback(endpoint: .tcp(host: "0.0.0.0", port: 0))) {
                try TLSListener(endpoint: .tcp(host: "0.0.0.0", port: 0), context: server)
            }
            // 0.0.0.0 as a destination reaches this host on Linux: were the check missing,
            // the test would meet a refused local connection, never another host.
            #expect(throws: TLSError.developmentCertificatesOffLoopback(endpoint: .tcp(host: "0.0.0.0", port: 1))) {
                try TLSConnector.connect(to: .tcp(host: "0.0.0.0", port: 1), context: client, timeoutSeconds: 1)
            }
            let (s, c) = try connectedPair(server: server, client: client)
            defer { s.close(); c.close() }
            #expect(s.security.developmentCertificates && c.security.developmentCertificates)
        }

        @Test(arguments: [("127.0.0.1:1", true), ("127.9.8.7:1", true), ("[::1]:1", true), ("localhost:1", true),
                          ("[::ffff:127.0.0.1]:1", true), ("unix:/tmp/x.sock", true), ("0.0.0.0:1", false),
                          ("*:1", false), ("192.0.2.1:1", false), ("[::]:1", false), ("[::2]:1", false),
                          ("128.0.0.1:1", false), ("host.example:1", false)])
        func loopbackEndpointsAreRecognised(text: String, loopback: Bool) throws {
            #expect(try Endpoint(parsing: text).isLoopback == loopback)
        }

        @Test func fingerprintsFileNextToTheSetMatchesTheBinaryAndTheCertificates() throws {
            let listed = try String(contentsOfFile: "\(Self.dev)/FINGERPRINTS.sha256", encoding: .utf8)
                .split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true) }
            let fromFile = Dictionary(uniqueKeysWithValues: listed.map { (String($0[0]), String($0[1])) })
            #expect(fromFile == DevelopmentCertificates.fingerprints)
            for name in fromFile.values {
                #expect(DevelopmentCertificates.bundleContainsOne("\(Self.dev)/\(name)"), "\(name)")
            }
        }

        @Test func keyReadableByOthersIsRefusedNamingTheFix() throws {
            let pki = try TestPKI.get()
            let copy = pki.path("open-source-key.pem")
            try? FileManager.default.removeItem(atPath: copy)
            try FileManager.default.copyItem(atPath: pki.path("source-key.pem"), toPath: copy)
            chmod(copy, 0o644)
            var config = pki.clientConfig()
            config.privateKeyFile = copy
            #expect(throws: TLSError.privateKeyTooOpen(path: copy, mode: UInt32(S_IFREG) | 0o644)) {
                try TLSContext(configuration: config, role: .client)
            }
            #expect(TLSError.privateKeyTooOpen(path: copy, mode: 0o100640).description.contains("chmod 600 \(copy)"))
            chmod(copy, 0o600)
            _ = try TLSContext(configuration: config, role: .client)
        }

        @Test func developmentKeysAreExemptFromTheModeRuleWhenAllowed() throws {
            // git checks the keys out 0644 whatever they were committed with.
            let dir = NSTemporaryDirectory() + "vfio-migrate-devcopy-\(getpid())"
            try? FileManager.default.removeItem(atPath: dir)
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            for f in ["ca.pem", "source.pem", "source-key.pem"] {
                try FileManager.default.copyItem(atPath: "\(Self.dev)/\(f)", toPath: "\(dir)/\(f)")
            }
            chmod("\(dir)/source-key.pem", 0o644)
            var config = Self.devConfig("source", peer: "destination", allow: true)
            (config.caFile, config.certificateFile, config.privateKeyFile) = ("\(dir)/ca.pem", "\(dir)/source.pem", "\(dir)/source-key.pem")
            _ = try TLSContext(configuration: config, role: .client)
        }

        @Test(arguments: [("clientonly", TLSRole.server), ("serveronly", TLSRole.client)])
        func certificateWithoutTheUsageItsRoleNeedsIsRefused(cert: String, role: TLSRole) throws {
            let pki = try TestPKI.get()
            let config = role == .server ? pki.serverConfig(cert: cert) : pki.clientConfig(cert: cert)
            #expect {
                try TLSContext(configuration: config, role: role)
            } throws: { error in
                guard case .ownCertificateWrongUsage(let path, _, let r) = error as? TLSError else { return false }
                return path == pki.path(cert + ".pem") && r == role
            }
            // The same certificate serves the role its usage names.
            let other: TLSRole = role == .server ? .client : .server
            _ = try TLSContext(configuration: other == .server ? pki.serverConfig(cert: cert) : pki.clientConfig(cert: cert), role: other)
        }

        @Test func certificateExpiringWithin30DaysIsWarnedOnBothEnds() throws {
            let pki = try TestPKI.get()
            let server = try TLSContext(configuration: pki.serverConfig(cert: "soon"), role: .server)
            let client = try TLSContext(configuration: pki.clientConfig(), role: .client)
            let own = SessionSecurity(ownCertificateNotAfter: server.ownCertificateNotAfter).warnings()
            #expect(own.count == 1 && own[0].contains("this host's certificate expires in"))
            let (s, c) = try connectedPair(server: server, client: client)
            defer { s.close(); c.close() }
            #expect(c.security.warnings().contains { $0.contains("the peer's certificate expires in") })
            #expect(!s.security.warnings().contains { $0.contains("peer") })
        }

        @Test func expiryWarningStartsAt30Days() {
            let now: Int64 = 1_800_000_000
            #expect(SessionSecurity.daysLeftIfSoon(now + 30 * 86_400, now: now) == 30)
            #expect(SessionSecurity.daysLeftIfSoon(now + 30 * 86_400 + 1, now: now) == nil)
            #expect(SessionSecurity.daysLeftIfSoon(now + 86_399, now: now) == 0)
            #expect(SessionSecurity.daysLeftIfSoon(nil, now: now) == nil)
        }
    }
}
