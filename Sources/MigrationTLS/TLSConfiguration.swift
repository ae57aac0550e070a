public struct TLSConfiguration: Sendable {
    public var caFile: String
    public var certificateFile: String
    public var privateKeyFile: String
    /// The name the peer's certificate must carry (SAN DNS or IP).
    public var peerName: String
    /// Further acceptable peer names (an allow-list, like QEMU's tls-authz).
    public var allowedPeerNames: [String]
    public var crlFile: String?
    public var handshakeTimeoutSeconds: Double
    /// Permit the committed development set (`DevelopmentCertificates`) as trust anchor or
    /// own certificate. Even then listeners and connectors accept loopback and UNIX-socket
    /// endpoints only, and the development keys are exempt from the 0600 rule.
    public var allowDevelopmentCertificates: Bool
    /// ALPN protocol identifiers, most preferred first: a client offers them, a server
    /// selects the first of its own it finds offered, and selects none (never a fatal
    /// alert) when none is. Empty: no ALPN at all.
    public var applicationProtocols: [String] = []
    public init(caFile: String, certificateFile: String, privateKeyFile: String, peerName: String,
                allowedPeerNames: [String] = [], crlFile: String? = nil, handshakeTimeoutSeconds: Double = 10,
                allowDevelopmentCertificates: Bool = false) {
        self.caFile = caFile; self.certificateFile = certificateFile; self.privateKeyFile = privateKeyFile
        self.peerName = peerName; self.allowedPeerNames = allowedPeerNames; self.crlFile = crlFile
        self.handshakeTimeoutSeconds = handshakeTimeoutSeconds
        self.allowDevelopmentCertificates = allowDevelopmentCertificates
    }

    /// `peerName` first, then the allow-list, without duplicates or empty names.
    var expectedPeerNames: [String] {
        var names: [String] = []
        for name in [peerName] + allowedPeerNames where !name.isEmpty && !names.contains(name) {
            names.append(name)
        }
        return names
    }
}

public enum TLSRole: Sendable { case client, server }
