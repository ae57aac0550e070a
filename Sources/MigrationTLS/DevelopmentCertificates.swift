internal import COpenSSL
import Glibc

/// The development certificate set committed in `certs/dev/`. Its private keys are
/// public, so a certificate from it proves nothing about who is on the other end:
/// a context that trusts or presents one is refused unless the configuration allows
/// development certificates, and even then a listener or connector refuses every
/// address but loopback and UNIX sockets.
///
/// Recognised by the SHA-256 fingerprint of the DER certificate, the same digests as
/// `certs/dev/FINGERPRINTS.sha256` (a test keeps the two equal), so an installed
/// binary recognises the set without the repository next to it.
public enum DevelopmentCertificates {
    public static let fingerprints: [String: String] = [
        "3259b4bddd96f9be29d49324aaaf6ad1ff804b37dfe633cd2d8c6c0b473c8030": "ca.pem",
        "d713196b744787776b193b1f21550a03306d6f4a139b17591a3eb927b4c0f864": "source.pem",
        "32d65af54984dbaec90cf89bc84bf200b16efa163fbca7be47cbe54d7db549ec": "destination.pem",
    ]

    /// Whether `cert` (borrowed) is one of the committed development certificates.
    static func contains(_ cert: OpaquePointer) -> Bool {
        guard let digest = Certificate.sha256Fingerprint(cert) else { return false }
        return fingerprints[digest] != nil
    }

    /// Whether any certificate in the PEM bundle at `path` is a development certificate.
    static func bundleContainsOne(_ path: String) -> Bool {
        ERR_clear_error()
        guard let bio = BIO_new_file(path, "r") else { _ = OpenSSLError.drainQueue(); return false }
        defer { BIO_free(bio) }
        var found = false
        while let cert = PEM_read_bio_X509(bio, nil, nil, nil) {
            found = found || contains(cert)
            X509_free(cert)
        }
        _ = OpenSSLError.drainQueue()  // the read that ends the loop always fails
        return found
    }
}

extension Endpoint {
    /// True for UNIX sockets and for TCP on a loopback address (127.0.0.0/8, ::1,
    /// ::ffff:127.x, or the name `localhost`): traffic that cannot leave this host.
    public var isLoopback: Bool {
        switch self {
        case .unix: return true
        case let .tcp(host, _):
            if host == "localhost" { return true }
            var v4 = in_addr()
            if inet_pton(AF_INET, host, &v4) == 1 { return UInt32(bigEndian: v4.s_addr) >> 24 == 127 }
            var v6 = in6_addr()
            guard inet_pton(AF_INET6, host, &v6) == 1 else { return false }
            let b = withUnsafeBytes(of: v6) { Array($0) }
            if b[0..<15].allSatisfy({ $0 == 0 }) && b[15] == 1 { return true }  // ::1
            let mapped = b[0..<10].allSatisfy({ $0 == 0 }) && b[10] == 0xff && b[11] == 0xff
            return mapped && b[12] == 127
        }
    }
}

/// Facts about a session's certificates that deserve a warning, not a refusal.
public struct SessionSecurity: Sendable, Equatable {
    /// The committed development set is in use (allowed on loopback only).
    public var developmentCertificates: Bool
    /// notAfter of this host's and of the peer's certificate, seconds since 1970 UTC.
    public var ownCertificateNotAfter: Int64?
    public var peerCertificateNotAfter: Int64?

    public init(developmentCertificates: Bool = false, ownCertificateNotAfter: Int64? = nil,
                peerCertificateNotAfter: Int64? = nil) {
        self.developmentCertificates = developmentCertificates
        self.ownCertificateNotAfter = ownCertificateNotAfter
        self.peerCertificateNotAfter = peerCertificateNotAfter
    }

    /// A certificate that expires within this many days gets a warning.
    public static let expiryWarningDays: Int64 = 30

    /// Whole days from `now` (seconds since 1970 UTC) until `notAfter`, when that is
    /// within `expiryWarningDays`; nil when it is later or unknown.
    public static func daysLeftIfSoon(_ notAfter: Int64?, now: Int64) -> Int64? {
        guard let notAfter, notAfter - now <= expiryWarningDays * 86_400 else { return nil }
        return max(notAfter - now, 0) / 86_400
    }
}

extension SessionSecurity {
    /// One sentence per fact an operator should act on, for logs and events.
    /// `now` is seconds since 1970 UTC (default: the clock).
    public func warnings(now: Int64? = nil) -> [String] {
        let now = now ?? Int64(Glibc.time(nil))
        var lines: [String] = []
        if developmentCertificates {
            lines.append("this session uses the development certificates from certs/dev, whose private keys are public (allowed on loopback only)")
        }
        if let days = Self.daysLeftIfSoon(ownCertificateNotAfter, now: now) {
            lines.append("this host's certificate expires in \(days) day(s): renew it")
        }
        if let days = Self.daysLeftIfSoon(peerCertificateNotAfter, now: now) {
            lines.append("the peer's certificate expires in \(days) day(s): renew it")
        }
        return lines
    }
}
