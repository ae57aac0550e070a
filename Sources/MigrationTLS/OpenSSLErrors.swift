internal import COpenSSL
import Glibc
import SystemPackage

/// One entry of OpenSSL's (per-thread) error queue.
struct OpenSSLError {
    let library: Int32
    let reason: Int32
    let text: String

    /// Empties this thread's error queue. Call on the thread that made the failing
    /// call, right after it (ERR_clear_error() goes before each call).
    static func drainQueue() -> [OpenSSLError] {
        var entries: [OpenSSLError] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            let full = String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let reasonText = ERR_reason_error_string(code).map { String(cString: $0) }
            entries.append(OpenSSLError(library: ERR_GET_LIB(code), reason: ERR_GET_REASON(code),
                                        text: reasonText ?? full))
        }
        return entries
    }

    static func summary(_ entries: [OpenSSLError], fallback: String = "unknown OpenSSL error") -> String {
        entries.isEmpty ? fallback : entries.map(\.text).joined(separator: "; ")
    }
}

/// TLS alerts arrive in the error queue as reason SSL_AD_REASON_OFFSET (1000) + alert code.
private let alertReasonOffset: Int32 = 1000

extension TLSError {
    /// Turns a failed SSL_* call into an operator-readable error. Must run on the thread
    /// that made the call, with `errno` saved right after it.
    static func fromFailedCall(sslError: Int32, errno: Errno, duringHandshake: Bool,
                               verification: PeerVerification) -> TLSError {
        let queue = OpenSSLError.drainQueue()
        // This side's verify callback refused the peer's certificate: its record is precise.
        if let failure = verification.failure { return failure.error }

        for entry in queue where entry.library == ERR_LIB_SSL {
            switch entry.reason {
            case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
                return .noPeerCertificate
            case SSL_R_UNEXPECTED_EOF_WHILE_READING:
                return duringHandshake ? .peerClosedDuringHandshake : .truncated
            case SSL_R_UNSUPPORTED_PROTOCOL, SSL_R_NO_PROTOCOLS_AVAILABLE, SSL_R_WRONG_SSL_VERSION,
                 SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
                return .protocolVersion(detail: entry.text)
            case SSL_R_WRONG_VERSION_NUMBER, SSL_R_HTTP_REQUEST, SSL_R_HTTPS_PROXY_REQUEST,
                 SSL_R_PACKET_LENGTH_TOO_LONG, SSL_R_UNKNOWN_PROTOCOL, SSL_R_RECORD_LENGTH_MISMATCH,
                 SSL_R_UNEXPECTED_MESSAGE where duringHandshake:
                return .notTLS(detail: entry.text)
            case alertReasonOffset..<(alertReasonOffset + 256):
                let alert = entry.reason - alertReasonOffset
                return .refusedByPeer(alert: alertDescription(alert))
            default:
                continue
            }
        }
        switch sslError {
        case SSL_ERROR_SYSCALL:
            if errno == .connectionReset || errno == .brokenPipe { return .connectionReset }
            // errno 0: the socket reported end of file, not an error.
            if errno.rawValue == 0 { return duringHandshake ? .peerClosedDuringHandshake : .truncated }
            return .socketError(operation: duringHandshake ? "TLS handshake" : "TLS I/O", errno: errno)
        default:
            let detail = OpenSSLError.summary(queue, fallback: "SSL error \(sslError)")
            return duringHandshake ? .handshakeFailed(detail: detail) : .protocolError(detail: detail)
        }
    }
}

/// RFC 8446 alert names (OpenSSL 3.0's SSL_alert_desc_string_long lacks the TLS 1.3 ones,
/// e.g. certificate_required, which is exactly what a client without a certificate gets).
func alertDescription(_ code: Int32) -> String {
    switch code {
    case 10: return "unexpected message"
    case 20: return "bad record MAC"
    case 22: return "record overflow"
    case 40: return "handshake failure"
    case 42: return "bad certificate"
    case 43: return "unsupported certificate"
    case 44: return "certificate revoked"
    case 45: return "certificate expired"
    case 46: return "certificate unknown"
    case 47: return "illegal parameter"
    case 48: return "unknown CA"
    case 49: return "access denied"
    case 50: return "decode error"
    case 51: return "decrypt error"
    case 70: return "protocol version"
    case 71: return "insufficient security"
    case 80: return "internal error"
    case 86: return "inappropriate fallback"
    case 90: return "user canceled"
    case 109: return "missing extension"
    case 110: return "unsupported extension"
    case 112: return "unrecognized name"
    case 116: return "certificate required"
    case 120: return "no application protocol"
    default: return "alert \(code)"
    }
}
