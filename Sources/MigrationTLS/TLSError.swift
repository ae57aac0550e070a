import SystemErrno
import SystemPackage

/// Every failure of the TLS layer, with enough context for an operator to act.
/// Cases about the *peer's* certificate are reported by the side that verified it;
/// the other side sees `.refusedByPeer` carrying the TLS alert it received.
public enum TLSError: Error, Sendable, Equatable, CustomStringConvertible {
    // MARK: Configuration (thrown by TLSContext.init, before any connection)
    case fileUnreadable(path: String, errno: Errno)
    case invalidPEM(path: String, detail: String)
    case keyDoesNotMatchCertificate(certificate: String, key: String)
    case encryptedPrivateKey(path: String)
    case ownCertificateExpired(path: String, subject: String, notAfter: String)
    case ownCertificateNotYetValid(path: String, subject: String, notBefore: String)
    /// The own certificate's extendedKeyUsage lacks what this side's TLS role needs.
    case ownCertificateWrongUsage(path: String, subject: String, role: TLSRole)
    /// A private key file that group or others may read (as ssh refuses one).
    case privateKeyTooOpen(path: String, mode: UInt32)
    /// The committed development set, whose private keys are public, without permission.
    case developmentCertificatesRefused(path: String)
    /// Development certificates permitted, but the endpoint can reach other hosts.
    case developmentCertificatesOffLoopback(endpoint: Endpoint)
    case invalidConfiguration(String)
    case invalidEndpoint(String, reason: String)

    // MARK: This side refused the peer's certificate
    case noPeerCertificate
    case certificateExpired(subject: String, notAfter: String)
    case certificateNotYetValid(subject: String, notBefore: String)
    /// The peer's certificate does not chain to the configured CA.
    case unknownCA(subject: String, issuer: String)
    case peerNameMismatch(expected: [String], presented: [String])
    case certificateRevoked(subject: String)
    /// CRL checking was asked for but the CRL cannot be used (missing for the issuer, expired, bad signature).
    case crlProblem(String)
    case certificateRejected(subject: String, reason: String)

    // MARK: The peer refused this side, or the protocol failed
    /// The peer sent a fatal TLS alert (e.g. "certificate required", "unknown CA", "bad certificate").
    case refusedByPeer(alert: String)
    /// The peer does not speak TLS (plaintext or another protocol).
    case notTLS(detail: String)
    /// The peer does not speak TLS 1.3.
    case protocolVersion(detail: String)
    case peerClosedDuringHandshake
    case handshakeFailed(detail: String)
    case protocolError(detail: String)

    // MARK: Transport
    case handshakeTimeout(seconds: Double)
    case readTimeout(seconds: Double)
    case writeTimeout(seconds: Double)
    case acceptTimeout(seconds: Double)
    case connectTimeout(endpoint: Endpoint, seconds: Double)
    case connectFailed(endpoint: Endpoint, errno: Errno)
    case listenFailed(endpoint: Endpoint, errno: Errno)
    /// A descriptor handed over to listen on (socket activation) is not a listening stream socket.
    case notAListeningSocket(descriptor: Int32, reason: String)
    case resolveFailed(host: String, detail: String)
    case socketError(operation: String, errno: Errno)
    /// The peer closed the connection without a TLS close_notify: data may be missing.
    case truncated
    /// The peer reset the connection (or it was gone when written to).
    case connectionReset
    /// This side closed the stream or listener (`close()`), possibly from another thread.
    case closed

    public var description: String {
        switch self {
        case let .fileUnreadable(path, err):
            return "cannot read \(path): \(err.explanation)"
        case let .invalidPEM(path, detail):
            return "\(path) is not a usable PEM file: \(detail)"
        case let .keyDoesNotMatchCertificate(cert, key):
            return "private key \(key) does not belong to certificate \(cert)"
        case let .encryptedPrivateKey(path):
            return "private key \(path) is encrypted (or unreadable as PEM); an unencrypted key file with mode 0600 is required"
        case let .ownCertificateExpired(path, subject, notAfter):
            return "this host's certificate \(path) (\(subject)) expired on \(notAfter); peers would refuse it — renew it"
        case let .ownCertificateNotYetValid(path, subject, notBefore):
            return "this host's certificate \(path) (\(subject)) is not valid before \(notBefore); peers would refuse it — check the clock"
        case let .ownCertificateWrongUsage(path, subject, role):
            let (use, side) = role == .server ? ("serverAuth", "listening") : ("clientAuth", "connecting")
            return "this host's certificate \(path) (\(subject)) does not permit \(use) in its extendedKeyUsage, which the \(side) side needs; issue it with extendedKeyUsage=serverAuth,clientAuth"
        case let .privateKeyTooOpen(path, mode):
            return "private key \(path) is readable by group or others (mode \(String(mode & 0o777, radix: 8))); run: chmod 600 \(path)"
        case let .developmentCertificatesRefused(path):
            return "\(path) is from the development set in certs/dev, whose private keys are public: anyone could authenticate with it. Use your own certificates (certs/README.md); for a loopback test only, pass --allow-dev-certs"
        case let .developmentCertificatesOffLoopback(endpoint):
            return "the development certificates (public private keys) are allowed on loopback and UNIX-socket addresses only, not on \(endpoint); use your own certificates (certs/README.md)"
        case let .invalidConfiguration(why):
            return "invalid TLS configuration: \(why)"
        case let .invalidEndpoint(text, reason):
            return "invalid endpoint '\(text)': \(reason) (expected HOST:PORT, [IPV6]:PORT or unix:PATH)"
        case .noPeerCertificate:
            return "the peer presented no certificate (mutual TLS is required)"
        case let .certificateExpired(subject, notAfter):
            return "the peer's certificate (\(subject)) expired on \(notAfter)"
        case let .certificateNotYetValid(subject, notBefore):
            return "the peer's certificate (\(subject)) is not valid before \(notBefore) (clock skew?)"
        case let .unknownCA(subject, issuer):
            return "the peer's certificate (\(subject)) was issued by '\(issuer)', which does not chain to the configured CA"
        case let .peerNameMismatch(expected, presented):
            let shown = presented.isEmpty ? "no subjectAltName" : presented.joined(separator: ", ")
            return "the peer's certificate names [\(shown)], none of the expected [\(expected.joined(separator: ", "))]"
        case let .certificateRevoked(subject):
            return "the peer's certificate (\(subject)) is revoked by the configured CRL"
        case let .crlProblem(detail):
            return "cannot check the peer's certificate against the CRL: \(detail)"
        case let .certificateRejected(subject, reason):
            return "the peer's certificate (\(subject)) was rejected: \(reason)"
        case let .refusedByPeer(alert):
            return "the peer refused the connection (TLS alert: \(alert)); the reason is in the peer's log — often this host's certificate, CA or name"
        case let .notTLS(detail):
            return "the peer does not speak TLS (\(detail)); is it a plaintext endpoint or another service?"
        case let .protocolVersion(detail):
            return "the peer does not support TLS 1.3, which is required (\(detail))"
        case .peerClosedDuringHandshake:
            return "the peer closed the connection during the TLS handshake"
        case let .handshakeFailed(detail):
            return "TLS handshake failed: \(detail)"
        case let .protocolError(detail):
            return "TLS error: \(detail)"
        case let .handshakeTimeout(s):
            return "TLS handshake did not complete within \(s) s"
        case let .readTimeout(s):
            return "no data from the peer within \(s) s"
        case let .writeTimeout(s):
            return "the peer accepted no data within \(s) s"
        case let .acceptTimeout(s):
            return "no peer connected within \(s) s"
        case let .connectTimeout(endpoint, s):
            return "connecting to \(endpoint) timed out after \(s) s"
        case let .connectFailed(endpoint, err):
            return "cannot connect to \(endpoint): \(err.explanation)"
        case let .listenFailed(endpoint, err):
            return "cannot listen on \(endpoint): \(err.explanation)"
        case let .notAListeningSocket(fd, reason):
            return "descriptor \(fd) cannot be listened on: \(reason)"
        case let .resolveFailed(host, detail):
            return "cannot resolve '\(host)': \(detail)"
        case let .socketError(op, err):
            return "\(op) failed: \(err.explanation)"
        case .truncated:
            return "the peer closed the connection without a TLS close_notify (data may be truncated)"
        case .connectionReset:
            return "the connection was reset by the peer"
        case .closed:
            return "the connection was closed locally"
        }
    }
}
