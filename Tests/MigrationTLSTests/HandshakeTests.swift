import Glibc
import SystemPackage
import Testing
@testable import MigrationTLS
import TestSupport

/// One serialized suite for everything that opens sockets: predictable timing on a
/// 2-core machine, and the 256 MiB transfer does not starve the timeout tests.
@Suite(.serialized) struct TLSTests {}

extension TLSTests {
    @Suite struct Handshake {
        @Test func mutualHandshakeReportsTheMatchedPeerNames() throws {
            let pki = try TestPKI.get()
            let server = try TLSContext(configuration: pki.serverConfig(), role: .server)
            // The client checks an IP SAN here; the server a DNS SAN.
            let client = try TLSContext(configuration: pki.clientConfig(peerName: "127.0.0.1"), role: .client)
            let (s, c) = try connectedPair(server: server, client: client)
            defer { s.close(); c.close() }
            #expect(s.peerName == "source.test")
            #expect(c.peerName == "127.0.0.1")
            try c.write(Array("ping".utf8))
            #expect(try s.read(maxCount: 100) == Array("ping".utf8))
        }

        static let ipv6Loopback: Bool = (try? Socket.listen(on: .tcp(host: "::1", port: 0)))?.close() != nil

        @Test(.enabled(if: ipv6Loopback, "no IPv6 loopback here"))
        func handshakeOverIPv6ChecksTheIPv6Name() throws {
            let pki = try TestPKI.get()
            let server = try TLSContext(configuration: pki.serverConfig(), role: .server)
            let client = try TLSContext(configuration: pki.clientConfig(peerName: "::1"), role: .client)
            let (s, c) = try connectedPair(server: server, client: client, endpoint: try Endpoint(parsing: "[::1]:0"))
            defer { s.close(); c.close() }
            #expect(c.peerName == "::1")
            try s.write([7])
            #expect(try c.read(maxCount: 1) == [7])
        }

        @Test func allowListAcceptsAFurtherName() throws {
            let pki = try TestPKI.get()
            let server = try TLSContext(configuration: pki.serverConfig(peerName: "other-source.test",
                                                                        allowed: ["source.test"]), role: .server)
            let client = try TLSContext(configuration: pki.clientConfig(peerName: "nope.test",
                                                                        allowed: ["destination.test"]), role: .client)
            let (s, c) = try connectedPair(server: server, client: client)
            defer { s.close(); c.close() }
            #expect(s.peerName == "source.test")
            #expect(c.peerName == "destination.test")
        }

        @Test func clientWithoutCertificateIsRefusedByTheServer() throws {
            let pki = try TestPKI.get()
            let server = try TLSContext(configuration: pki.serverConfig(), role: .server)
            let client = try TLSContext(configuration: pki.clientConfig(), role: .client,
                                        hooks: TLSTestHooks(omitCertificate: true))
            let (serverError, clientError) = try failedHandshake(server: server, client: client)
            #expect(serverError == .noPeerCertificate)
            #expect(clientError == .refusedByPeer(alert: "certificate required"))
        }

        @Test func writeOnlyClientLearnsItsRefusalFromTheWriteError() throws {
            // The client's handshake succeeds (TLS 1.3); it then only writes, and must get the
            // server's reason rather than a bare connection reset.
            let pki = try TestPKI.get()
            let server = try TLSContext(configuration: pki.serverConfig(), role: .server)
            let client = try TLSContext(configuration: pki.clientConfig(), role: .client,
                                        hooks: TLSTestHooks(omitCertificate: true))
            let listener = try TLSListener(endpoint: loopback, context: server)
            defer { listener.close() }
            let accepting = background { try listener.accept(timeoutSeconds: 10) }
            let stream = try TLSConnector.connect(to: listener.boundEndpoint, context: client, timeoutSeconds: 5)
            defer { stream.close() }
            stream.writeTimeoutSeconds = 5
            let chunk = [UInt8](repeating: 1, count: 1 << 16)
            let deadline = monotonicNow() + 20
            let error = #expect(throws: TLSError.self) {
                while monotonicNow() < deadline { try stream.write(chunk) }
            }
            #expect(error == .refusedByPeer(alert: "certificate required"))
            #expect(accepting.wait(timeout: 60).tlsError == .noPeerCertificate)
        }

        @Test func clientFromAnotherCAIsRefused() throws {
            let pki = try TestPKI.get()
            let server = try TLSContext(configuration: pki.serverConfig(), role: .server)
            let client = try TLSContext(configuration: pki.clientConfig(cert: "stranger"), role: .client)
            let (serverError, clientError) = try failedHandshake(server: server, client: client)
            #expect(serverError == .unknownCA(subject: "/CN=stranger", issuer: "/CN=test otherca"))
            #expect(clientError == .refusedByPeer(alert: "unknown CA"))
        }

        @Test func serverFromAnotherCAIsRefusedByTheClient() throws {
            let pki = try TestPKI.get()
            let server = try TLSContext(configuration: pki.serverConfig(cert: "stranger"), role: .server)
            let client = try TLSContext(configuration: pki.clientConfig(), role: .client)
            let (serverError, clientError) = try failedHandshake(server: server, client: client)
            #expect(clientError == .unknownCA(subject: "/CN=stranger", issuer: "/CN=test otherca"))
            #expect(serverError == .refusedByPeer(alert: "unknown CA"))
        }

        @Test func serverWithTheWrongNameIsRefusedByTheClient() throws {
            let pki = try TestPKI.get()
            let server = try TLSContext(configuration: pki.serverConfig(cert: "wrongname"), role: .server)
            let client = try TLSContext(configuration: pki.clientConfig(allowed: ["localhost"]), role: .client)
            let (serverError, clientError) = try failedHandshake(server: server, client: client)
            #expect(clientError == .peerNameMismatch(expected: ["destination.test", "localhost"],
                                                     presented: ["somebody-else.test"]))
            guard case .refusedByPeer = serverError else {
                Issue.record("server saw \(String(describing: serverError))"); return
            }
        }

        @Test func clientWithTheWrongNameIsRefusedByTheServer() throws {
            let pki = try TestPKI.get()
            let server = try TLSContext(configuration: pki.serverConfig(), role: .server)
            let client = try TLSContext(configuration: pki.clientConfig(cert: "wrongname"), role: .client)
            let (serverError, clientError) = try failedHandshake(server: server, client: client)
            #expect(serverError == .peerNameMismatch(expected: ["source.test"], presented: ["somebody-else.test"]))
            guard case .refusedByPeer = clientError else {
                Issue.record("client saw \(String(describing: clientError))"); return
            }
        }

        @Test func expiredClientCertificateIsRefused() throws {
            let pki = try TestPKI.get()
            let server = try TLSContext(configuration: pki.serverConfig(), role: .server)
            let client = try TLSContext(configuration: pki.clientConfig(cert: "expired"), role: .client,
                                        hooks: TLSTestHooks(skipOwnValidityCheck: true))
            let (serverError, clientError) = try failedHandshake(server: server, client: client)
            #expect(serverError == .certificateExpired(subject: "/CN=expired", notAfter: "Feb  1 00:00:00 2020 GMT"))
            #expect(clientError == .refusedByPeer(alert: "certificate expired"))
        }

        @Test func notYetValidServerCertificateIsRefused() throws {
            let pki = try TestPKI.get()
            let server = try TLSContext(configuration: pki.serverConfig(cert: "notyet"), role: .server,
                                        hooks: TLSTestHooks(skipOwnValidityCheck: true))
            let client = try TLSContext(configuration: pki.clientConfig(peerName: "source.test"), role: .client)
            let (serverError, clientError) = try failedHandshake(server: server, client: client)
            #expect(clientError == .certificateNotYetValid(subject: "/CN=notyet", notBefore: "Jan  1 00:00:00 2099 GMT"))
            guard case .refusedByPeer = serverError else {
                Issue.record("server saw \(String(describing: serverError))"); return
            }
        }

        @Test func revokedClientIsRefusedWithTheCRLAndOnlyWithIt() throws {
            let pki = try TestPKI.get()
            let client = try TLSContext(configuration: pki.clientConfig(cert: "revoked"), role: .client)
            let checking = try TLSContext(configuration: pki.serverConfig(crl: true), role: .server)
            let (serverError, clientError) = try failedHandshake(server: checking, client: client)
            #expect(serverError == .certificateRevoked(subject: "/CN=revoked"))
            #expect(clientError == .refusedByPeer(alert: "certificate revoked"))

            // The same certificate passes without the CRL, and a good one passes with it:
            // the refusal above is the CRL's doing.
            let plain = try TLSContext(configuration: pki.serverConfig(), role: .server)
            let (s1, c1) = try connectedPair(server: plain, client: client)
            s1.close(); c1.close()
            let good = try TLSContext(configuration: pki.clientConfig(), role: .client)
            let (s2, c2) = try connectedPair(server: checking, client: good)
            s2.close(); c2.close()
        }

        @Test func tls12OnlyPeerIsRefusedOnBothSides() throws {
            let pki = try TestPKI.get()
            let server = try TLSContext(configuration: pki.serverConfig(), role: .server)
            let client = try TLSContext(configuration: pki.clientConfig(), role: .client,
                                        hooks: TLSTestHooks(maxProtocolVersion: 0x0303))
            let (serverError, clientError) = try failedHandshake(server: server, client: client)
            guard case .protocolVersion = serverError, case .protocolVersion = clientError else {
                Issue.record("server: \(String(describing: serverError)), client: \(String(describing: clientError))")
                return
            }
        }

        @Test func plaintextPeerIsNotTLSAndTheListenerThenAcceptsAGoodPeer() throws {
            let pki = try TestPKI.get()
            let server = try TLSContext(configuration: pki.serverConfig(), role: .server)
            let listener = try TLSListener(endpoint: loopback, context: server)
            defer { listener.close() }
            let refused = background { try listener.accept(timeoutSeconds: 10) }
            let raw = try Socket.connect(to: listener.boundEndpoint, timeoutSeconds: 5)
            #expect(try raw.rawWrite(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8)) > 0)
            let result = refused.wait(timeout: 60)
            raw.close()
            guard case .notTLS = result.tlsError else {
                Issue.record("expected .notTLS, got \(result)"); return
            }

            let accepted = background { try listener.accept(timeoutSeconds: 10) }
            let client = try TLSConnector.connect(to: listener.boundEndpoint,
                                                  context: TLSContext(configuration: pki.clientConfig(), role: .client),
                                                  timeoutSeconds: 5)
            let stream = try accepted.join()
            #expect(stream.peerName == "source.test")
            try stream.write([42])
            #expect(try client.read(maxCount: 8) == [42])
            stream.close(); client.close()
        }

        @Test func silentPeerHitsTheHandshakeTimeout() throws {
            let pki = try TestPKI.get()
            let server = try TLSContext(configuration: pki.serverConfig(handshakeTimeout: 0.3), role: .server)
            let listener = try TLSListener(endpoint: loopback, context: server)
            defer { listener.close() }
            let accepting = background { try listener.accept(timeoutSeconds: 10) }
            let raw = try Socket.connect(to: listener.boundEndpoint, timeoutSeconds: 5)
            defer { raw.close() }
            #expect(accepting.wait(timeout: 5).tlsError == .handshakeTimeout(seconds: 0.3))
        }

        @Test func acceptTimesOutAndCloseWakesABlockedAccept() throws {
            let pki = try TestPKI.get()
            let listener = try TLSListener(endpoint: loopback,
                                           context: TLSContext(configuration: pki.serverConfig(), role: .server))
            #expect(throws: TLSError.acceptTimeout(seconds: 0.1)) { try listener.accept(timeoutSeconds: 0.1) }
            let blocked = background { try listener.accept(timeoutSeconds: nil) }
            usleep(100_000)
            listener.close()
            #expect(blocked.wait(timeout: 5).tlsError == .closed)
        }

        @Test func connectingToAClosedPortFails() throws {
            let pki = try TestPKI.get()
            let listener = try TLSListener(endpoint: loopback,
                                           context: TLSContext(configuration: pki.serverConfig(), role: .server))
            let endpoint = listener.boundEndpoint
            listener.close()
            let client = try TLSContext(configuration: pki.clientConfig(), role: .client)
            #expect(throws: TLSError.connectFailed(endpoint: endpoint, errno: .connectionRefused)) {
                try TLSConnector.connect(to: endpoint, context: client, timeoutSeconds: 5)
            }
        }
    }
}
