internal import COpenSSL

/// What the verify callback learnt about the peer during one handshake. Reached from
/// the callback through the SSL's app-data slot; touched only by the handshaking thread.
final class PeerVerification: @unchecked Sendable {  // mutated only by the handshaking thread (C verify callback), read after it
    let expectedNames: [String]
    var matchedName: String?
    var failure: Failure?

    struct Failure {
        let error: TLSError
    }

    init(expectedNames: [String]) { self.expectedNames = expectedNames }

    /// Records the first reason the chain was refused, with the offending certificate's details.
    func recordFailure(code: Int32, certificate: OpaquePointer?) {
        guard failure == nil else { return }
        let subject = certificate.map(Certificate.subject) ?? "?"
        let error: TLSError
        switch code {
        case X509_V_ERR_CERT_HAS_EXPIRED:
            error = .certificateExpired(subject: subject, notAfter: certificate.map(Certificate.notAfter) ?? "?")
        case X509_V_ERR_CERT_NOT_YET_VALID:
            error = .certificateNotYetValid(subject: subject, notBefore: certificate.map(Certificate.notBefore) ?? "?")
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
             X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN,
             X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE, X509_V_ERR_CERT_SIGNATURE_FAILURE:
            error = .unknownCA(subject: subject, issuer: certificate.map(Certificate.issuer) ?? "?")
        case X509_V_ERR_CERT_REVOKED:
            error = .certificateRevoked(subject: subject)
        case X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH:
            error = .peerNameMismatch(expected: expectedNames,
                                      presented: certificate.map(Certificate.alternativeNames) ?? [])
        case X509_V_ERR_UNABLE_TO_GET_CRL, X509_V_ERR_CRL_HAS_EXPIRED, X509_V_ERR_CRL_NOT_YET_VALID,
             X509_V_ERR_CRL_SIGNATURE_FAILURE, X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE,
             X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER:
            error = .crlProblem(String(cString: X509_verify_cert_error_string(Int(code))))
        default:
            error = .certificateRejected(subject: subject, reason: String(cString: X509_verify_cert_error_string(Int(code))))
        }
        failure = Failure(error: error)
    }
}

/// OpenSSL calls this for each certificate of the peer's chain. Chain problems arrive
/// with preverifyOK == 0; the leaf, once its chain is good, gets our name check, which
/// covers DNS and IP names and a whole allow-list (SSL_set1_host cannot mix them).
let peerVerifyCallback: @convention(c) (Int32, OpaquePointer?) -> Int32 = { preverifyOK, store in
    guard let store, let ssl = copenssl_SSL_from_store_ctx(store), let raw = SSL_get_ex_data(ssl, 0) else {
        return 0  // no state to check names against: fail closed
    }
    let verification = Unmanaged<PeerVerification>.fromOpaque(raw).takeUnretainedValue()
    let certificate = X509_STORE_CTX_get_current_cert(store)
    if preverifyOK == 0 {
        verification.recordFailure(code: X509_STORE_CTX_get_error(store), certificate: certificate)
        return 0
    }
    guard X509_STORE_CTX_get_error_depth(store) == 0, let certificate else { return 1 }
    if let name = verification.expectedNames.first(where: { Certificate.matches(certificate, name: $0) }) {
        verification.matchedName = name
        return 1
    }
    X509_STORE_CTX_set_error(store, X509_V_ERR_HOSTNAME_MISMATCH)
    verification.recordFailure(code: X509_V_ERR_HOSTNAME_MISMATCH, certificate: certificate)
    return 0
}
