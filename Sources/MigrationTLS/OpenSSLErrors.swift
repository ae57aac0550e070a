internal import COpenSSL
import Glibc

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
    /// that made the call, with `errnoValue` saved right after it.
    static func fromFailedCall(sslError: Int32, errnoValue: Int32, duringHandshake: Bool,
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
                return .refusedByPeer(alert: String(cString: SSL_alert_desc_string_long(alert)))
            default:
                continue
            }
        }
        switch sslError {
        case SSL_ERROR_SYSCALL:
            if errnoValue == ECONNRESET || errnoValue == EPIPE { return .connectionReset }
            if errnoValue == 0 { return duringHandshake ? .peerClosedDuringHandshake : .truncated }
            return .socketError(operation: duringHandshake ? "TLS handshake" : "TLS I/O", errno: errnoValue)
        default:
            let detail = OpenSSLError.summary(queue, fallback: "SSL error \(sslError)")
            return duringHandshake ? .handshakeFailed(detail: detail) : .protocolError(detail: detail)
        }
    }
}
