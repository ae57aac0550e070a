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
    public init(caFile: String, certificateFile: String, privateKeyFile: String, peerName: String,
                allowedPeerNames: [String] = [], crlFile: String? = nil, handshakeTimeoutSeconds: Double = 10) {
        self.caFile = caFile; self.certificateFile = certificateFile; self.privateKeyFile = privateKeyFile
        self.peerName = peerName; self.allowedPeerNames = allowedPeerNames; self.crlFile = crlFile
        self.handshakeTimeoutSeconds = handshakeTimeoutSeconds
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
