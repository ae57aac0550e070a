import Testing
@testable import MigrationTLS
import TestSupport

extension TLSTests {
    /// ALPN (the protocol version, PROTOCOL.md §13.1) and the keying-material exporter
    /// (the resume secret and bindings, §13.2).
    @Suite struct ApplicationProtocols {
        private func pair(client offered: [String], server accepted: [String]) throws -> (server: TLSStream, client: TLSStream) {
            let pki = try TestPKI.get()
            var serverConfig = pki.serverConfig()
            serverConfig.applicationProtocols = accepted
            var clientConfig = pki.clientConfig()
            clientConfig.applicationProtocols = offered
            return try connectedPair(server: TLSContext(configuration: serverConfig, role: .server),
                                     client: TLSContext(configuration: clientConfig, role: .client))
        }

        @Test func serverSelectsItsMostPreferredOfferedIdentifier() throws {
            let (s, c) = try pair(client: ["vfio-migrate/3", "vfio-migrate/2"], server: ["vfio-migrate/2", "vfio-migrate/3"])
            defer { s.close(); c.close() }
            #expect(s.applicationProtocol == "vfio-migrate/2")
            #expect(c.applicationProtocol == "vfio-migrate/2")
        }

        @Test(arguments: [
            (["vfio-migrate/9"], ["vfio-migrate/2"]),  // nothing in common: no fatal alert, no protocol
            ([], ["vfio-migrate/2"]),                  // a version-1 client offers nothing
            (["vfio-migrate/2"], []),                  // a version-1 server selects nothing
        ])
        func noCommonIdentifierSelectsNoneAndTheHandshakeSucceeds(offered: [String], accepted: [String]) throws {
            let (s, c) = try pair(client: offered, server: accepted)
            defer { s.close(); c.close() }
            #expect(s.applicationProtocol == nil)
            #expect(c.applicationProtocol == nil)
            try c.write([1, 2, 3])
            #expect(try s.read(maxCount: 3) == [1, 2, 3])
        }

        @Test func anIdentifierLongerThan255BytesIsRefused() throws {
            var config = try TestPKI.get().clientConfig()
            config.applicationProtocols = [String(repeating: "x", count: 256)]
            #expect(throws: TLSError.self) { try TLSContext(configuration: config, role: .client) }
        }

        @Test func bothEndsExportTheSameSecretAndAnotherConnectionAnotherOne() throws {
            let context: [UInt8] = Array(0..<16)
            let (s, c) = try pair(client: [], server: [])
            defer { s.close(); c.close() }
            let serverValue = try s.exportKeyingMaterial(label: "EXPERIMENTAL test", context: context, length: 32)
            #expect(serverValue.count == 32)
            #expect(try c.exportKeyingMaterial(label: "EXPERIMENTAL test", context: context, length: 32) == serverValue)
            #expect(try c.exportKeyingMaterial(label: "EXPERIMENTAL other", context: context, length: 32) != serverValue)
            #expect(try c.exportKeyingMaterial(label: "EXPERIMENTAL test", context: Array(1...16), length: 32) != serverValue)
            // The secret is taken after HELLO, when a read may already have met the end of the stream.
            c.close()
            s.readTimeoutSeconds = 5
            #expect(throws: TLSError.self) { _ = try s.read(maxCount: 16) }
            #expect(try s.exportKeyingMaterial(label: "EXPERIMENTAL test", context: context, length: 32) == serverValue)
            let (s2, c2) = try pair(client: [], server: [])
            defer { s2.close(); c2.close() }
            #expect(try c2.exportKeyingMaterial(label: "EXPERIMENTAL test", context: context, length: 32) != serverValue)
        }
    }
}
