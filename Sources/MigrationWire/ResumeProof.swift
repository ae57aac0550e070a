/// The proof each side sends in RESUME (docs/PROTOCOL.md §13.2): that it holds the
/// session's resume secret, bound to the connection it is sent on.
///
/// The secret is never sent. Both sides derive it from the session's first TLS
/// connection with the TLS exporter (RFC 8446 §7.5; OpenSSL's
/// `SSL_export_keying_material`), so it depends on both certificates and on keys no
/// observer, log or packet capture ever sees; a stolen session id is useless
/// without it. The proof mixes in an exporter value of the *current* connection, so
/// a proof captured from one connection (or reflected back by the peer: the role
/// is mixed in too) fails on any other. Pure computation; the TLS layer supplies
/// the two exporter values.
public enum ResumeProof {
    public static let size = 32

    /// Exporter label of the resume secret, taken once on the session's first
    /// connection (RFC 5705 §4: "EXPERIMENTAL" labels need no registration).
    public static let secretLabel = "EXPERIMENTAL vfio-migrate resume secret"
    /// Exporter label of the connection binding, taken on each resuming connection.
    public static let bindingLabel = "EXPERIMENTAL vfio-migrate resume binding"
    /// Both exporter calls use the 16-byte session id as their context and ask for 32 bytes.
    public static let exporterLength = 32

    static let domain: [UInt8] = Array("vfio-migrate resume proof".utf8)

    /// HMAC-SHA256(key: secret, message: "vfio-migrate resume proof" ‖ role ‖ session id ‖ binding).
    public static func compute(secret: [UInt8], binding: [UInt8], role: Role, sessionID: [UInt8]) -> [UInt8] {
        precondition(secret.count == exporterLength && binding.count == exporterLength, "exporter values are 32 bytes")
        precondition(sessionID.count == Hello.sessionIDSize, "session id is 16 bytes")
        return hmacSHA256(key: secret, message: domain + [role.rawValue] + sessionID + binding)
    }

    static let joinDomain: [UInt8] = Array("vfio-migrate join proof".utf8)

    /// Version 3 (§14.3), the source's JOIN: HMAC-SHA256(key: secret, message:
    /// "vfio-migrate join proof" ‖ 01 ‖ session id ‖ stream index (u32 LE) ‖ binding).
    /// Its own domain, so a JOIN proof is never a RESUME proof nor one of another index.
    public static func computeJoin(secret: [UInt8], binding: [UInt8], sessionID: [UInt8], streamIndex: UInt32) -> [UInt8] {
        precondition(secret.count == exporterLength && binding.count == exporterLength, "exporter values are 32 bytes")
        precondition(sessionID.count == Hello.sessionIDSize, "session id is 16 bytes")
        var index = ByteWriter()
        index.u32(streamIndex)
        return hmacSHA256(key: secret, message: joinDomain + [Role.source.rawValue] + sessionID + index.bytes + binding)
    }

    /// Compares in time independent of where the bytes differ (no timing oracle on the proof).
    public static func matches(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for i in a.indices { difference |= a[i] ^ b[i] }
        return difference == 0
    }

    /// RFC 2104 over SHA-256 (block 64 bytes).
    static func hmacSHA256(key: [UInt8], message: [UInt8]) -> [UInt8] {
        var block = key.count > 64 ? SHA256Digest.hash(key) : key
        block += [UInt8](repeating: 0, count: 64 - block.count)
        let inner = SHA256Digest.hash(block.map { $0 ^ 0x36 } + message)
        return SHA256Digest.hash(block.map { $0 ^ 0x5c } + inner)
    }
}
