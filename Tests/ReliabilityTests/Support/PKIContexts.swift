@testable import MigrationTLS
import TestSupport

/// Contexts with test hooks (an omitted client certificate), which need
/// `@testable` access and so stay with the tests that use them.
extension TestPKI {
    /// The listening destination: expects its client to be `source.test`.
    /// `alpn`: the protocol identifiers it selects among (none: version 1 only).
    func serverContext(alpn: [String] = []) throws -> TLSContext {
        var configuration = TLSConfiguration(caFile: path("ca.pem"), certificateFile: path("destination.pem"),
                                             privateKeyFile: path("destination-key.pem"), peerName: "source.test", handshakeTimeoutSeconds: 5)
        configuration.applicationProtocols = alpn
        return try TLSContext(configuration: configuration, role: .server)
    }

    /// A connecting source with certificate `cert` (expects the server to be `destination.test`).
    /// `alpn`: the protocol identifiers it offers (none: version 1).
    func clientContext(cert: String = "source", omitCertificate: Bool = false, alpn: [String] = []) throws -> TLSContext {
        var configuration = TLSConfiguration(caFile: path("ca.pem"), certificateFile: path(cert + ".pem"),
                                             privateKeyFile: path(cert + "-key.pem"), peerName: "destination.test", handshakeTimeoutSeconds: 5)
        configuration.applicationProtocols = alpn
        return try TLSContext(configuration: configuration, role: .client,
                              hooks: TLSTestHooks(omitCertificate: omitCertificate, skipOwnValidityCheck: true))
    }
}
