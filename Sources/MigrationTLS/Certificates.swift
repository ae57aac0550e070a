internal import COpenSSL
import Glibc

/// Read-only views of an X509 certificate for error messages and name checks.
/// `cert` is borrowed; nothing here frees it.
enum Certificate {
    static func subject(_ cert: OpaquePointer) -> String { nameText(X509_get_subject_name(cert)) }
    static func issuer(_ cert: OpaquePointer) -> String { nameText(X509_get_issuer_name(cert)) }

    private static func nameText(_ name: OpaquePointer?) -> String {
        guard let name else { return "?" }
        var buffer = [CChar](repeating: 0, count: 512)
        X509_NAME_oneline(name, &buffer, Int32(buffer.count))
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func notBefore(_ cert: OpaquePointer) -> String {
        withMemoryBIO { ASN1_TIME_print($0, X509_get0_notBefore(cert)) }
    }
    static func notAfter(_ cert: OpaquePointer) -> String {
        withMemoryBIO { ASN1_TIME_print($0, X509_get0_notAfter(cert)) }
    }
    /// notAfter as seconds since the epoch (nil if OpenSSL cannot convert it).
    static func notAfterEpochSeconds(_ cert: OpaquePointer) -> Int64? {
        var t = tm()
        guard ASN1_TIME_to_tm(X509_get0_notAfter(cert), &t) == 1 else { return nil }
        return Int64(timegm(&t))
    }

    /// Lower-case hex SHA-256 of the DER encoding (what `openssl x509 -fingerprint -sha256` shows).
    static func sha256Fingerprint(_ cert: OpaquePointer) -> String? {
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        guard X509_digest(cert, EVP_sha256(), &digest, &length) == 1 else { return nil }
        return digest.prefix(Int(length)).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }

    /// Whether the certificate may serve as a TLS server (`.server`) or client (`.client`):
    /// its extendedKeyUsage lists serverAuth / clientAuth, or it has no extendedKeyUsage
    /// at all (any use, RFC 5280 §4.2.1.12 — the peer's OpenSSL accepts it the same way).
    static func permits(_ cert: OpaquePointer, role: TLSRole) -> Bool {
        let usage = X509_get_extended_key_usage(cert)
        return usage & UInt32(role == .server ? XKU_SSL_SERVER : XKU_SSL_CLIENT) != 0
    }

    static func isExpired(_ cert: OpaquePointer) -> Bool { X509_cmp_current_time(X509_get0_notAfter(cert)) < 0 }
    static func isNotYetValid(_ cert: OpaquePointer) -> Bool { X509_cmp_current_time(X509_get0_notBefore(cert)) > 0 }

    /// The subjectAltName DNS and IP entries, as printed by OpenSSL ("DNS:x", "IP Address:y"),
    /// reduced to the names.
    static func alternativeNames(_ cert: OpaquePointer) -> [String] {
        let index = X509_get_ext_by_NID(cert, NID_subject_alt_name, -1)
        guard index >= 0, let ext = X509_get_ext(cert, index) else { return [] }
        let text = withMemoryBIO { X509V3_EXT_print($0, ext, 0, 0) }
        return text.split(separator: ",").map { entry in
            let trimmed = entry.trimmingLeadingSpaces
            for prefix in ["DNS:", "IP Address:"] where trimmed.hasPrefix(prefix) {
                return String(trimmed.dropFirst(prefix.count))
            }
            return String(trimmed)
        }
    }

    /// SAN-only match (never the subject CN): DNS names via X509_check_host, IP literals
    /// via X509_check_ip_asc.
    static func matches(_ cert: OpaquePointer, name: String) -> Bool {
        if isIPAddress(name) { return X509_check_ip_asc(cert, name, 0) == 1 }
        let flags = UInt32(X509_CHECK_FLAG_NEVER_CHECK_SUBJECT | X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS)
        return X509_check_host(cert, name, name.utf8.count, flags, nil) == 1
    }

    static func isIPAddress(_ text: String) -> Bool {
        var v4 = in_addr(), v6 = in6_addr()
        return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
    }

    private static func withMemoryBIO(_ write: (OpaquePointer) -> Int32) -> String {
        guard let bio = BIO_new(BIO_s_mem()) else { return "?" }
        defer { BIO_free(bio) }
        guard write(bio) > 0 else { return "?" }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 512)
        while true {
            let n = BIO_read(bio, &chunk, Int32(chunk.count))
            if n <= 0 { break }
            out += chunk.prefix(Int(n))
        }
        return String(decoding: out, as: UTF8.self)
    }
}

private extension Substring {
    var trimmingLeadingSpaces: Substring { drop(while: { $0 == " " || $0 == "\n" }) }
}
