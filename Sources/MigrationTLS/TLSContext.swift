internal import COpenSSL
import Glibc
import SystemErrno
import SystemPackage

/// Knobs the tests need to impersonate broken peers. Not reachable from the public API:
/// production contexts are always TLS 1.3-only, always present a valid certificate.
struct TLSTestHooks {
    var omitCertificate = false
    var maxProtocolVersion: Int32? = nil
    var skipOwnValidityCheck = false
}

/// A loaded, checked configuration (certs parsed, key matched) for one role.
/// The SSL_CTX is fully configured in `init` and never changed afterwards, which is what
/// makes sharing it between threads (SSL_new from several) safe.
public final class TLSContext: @unchecked Sendable {  // owns an SSL_CTX*, immutable after init
    let ctx: OpaquePointer
    let role: TLSRole
    let configuration: TLSConfiguration
    let expectedPeerNames: [String]
    /// The trust anchors or the own certificate are the committed development set.
    public let usesDevelopmentCertificates: Bool
    /// The own certificate's notAfter, seconds since 1970-01-01 UTC (nil without one).
    public let ownCertificateNotAfter: Int64?
    /// The server's ALPN choice, read by the select callback (which gets it as `arg`).
    private let applicationProtocols: ApplicationProtocolPreference

    public convenience init(configuration: TLSConfiguration, role: TLSRole) throws(TLSError) {
        try self.init(configuration: configuration, role: role, hooks: TLSTestHooks())
    }

    init(configuration: TLSConfiguration, role: TLSRole, hooks: TLSTestHooks) throws(TLSError) {
        ignoreSIGPIPEIfDefault()
        let names = configuration.expectedPeerNames
        guard !names.isEmpty else { throw .invalidConfiguration("peerName is empty: the peer's name must be checked") }
        guard configuration.handshakeTimeoutSeconds > 0 else {
            throw .invalidConfiguration("handshakeTimeoutSeconds must be positive")
        }
        var files = [configuration.caFile]
        if !hooks.omitCertificate { files += [configuration.certificateFile, configuration.privateKeyFile] }
        if let crl = configuration.crlFile { files.append(crl) }
        for path in files { try Self.checkReadable(path) }
        if let bad = configuration.applicationProtocols.first(where: { !(1...255).contains($0.utf8.count) }) {
            throw .invalidConfiguration("ALPN identifier \"\(bad)\" must be 1 to 255 bytes")
        }
        let preference = ApplicationProtocolPreference(configuration.applicationProtocols)

        ERR_clear_error()
        guard let ctx = SSL_CTX_new(role == .client ? TLS_client_method() : TLS_server_method()) else {
            throw .invalidConfiguration("SSL_CTX_new: " + OpenSSLError.summary(OpenSSLError.drainQueue()))
        }
        let facts: OwnCertificateFacts
        do {
            facts = try Self.configure(ctx, configuration, role: role, hooks: hooks)
            try Self.configureApplicationProtocols(ctx, preference, role: role)
        } catch {
            SSL_CTX_free(ctx)
            throw error
        }
        self.ctx = ctx
        self.role = role
        self.configuration = configuration
        self.expectedPeerNames = names
        self.usesDevelopmentCertificates = facts.development
        self.ownCertificateNotAfter = facts.notAfter
        self.applicationProtocols = preference
    }

    /// A client offers its identifiers; a server selects among the offered ones
    /// through the callback. `preference` is kept by the context, so the callback's
    /// unretained `arg` stays valid as long as the SSL_CTX.
    private static func configureApplicationProtocols(_ ctx: OpaquePointer, _ preference: ApplicationProtocolPreference,
                                                      role: TLSRole) throws(TLSError) {
        guard !preference.identifiers.isEmpty else { return }
        switch role {
        case .client:
            let wire = ApplicationProtocolPreference.wireForm(preference.identifiers.map { String(decoding: $0, as: UTF8.self) })
            // 0 is success here (unlike most of OpenSSL).
            try require(SSL_CTX_set_alpn_protos(ctx, wire, UInt32(wire.count)) == 0, "SSL_CTX_set_alpn_protos")
        case .server:
            SSL_CTX_set_alpn_select_cb(ctx, applicationProtocolSelectCallback, Unmanaged.passUnretained(preference).toOpaque())
        }
    }

    /// What `configure` learned about the trust anchors and the own certificate.
    private struct OwnCertificateFacts {
        var development = false
        var notAfter: Int64?
    }

    /// Refuses an endpoint that could reach another host while the development set,
    /// whose private keys are public, is in use. Called before any socket exists.
    func checkEndpoint(_ endpoint: Endpoint) throws(TLSError) {
        if usesDevelopmentCertificates && !endpoint.isLoopback {
            throw .developmentCertificatesOffLoopback(endpoint: endpoint)
        }
    }

    deinit { SSL_CTX_free(ctx) }

    private static func checkReadable(_ path: String) throws(TLSError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .fileUnreadable(path: path, errno: .current) }
        Glibc.close(fd)
    }

    private static func configure(_ ctx: OpaquePointer, _ config: TLSConfiguration, role: TLSRole,
                                  hooks: TLSTestHooks) throws(TLSError) -> OwnCertificateFacts {
        if let max = hooks.maxProtocolVersion {
            try require(copenssl_SSL_CTX_set_min_proto_version(ctx, max) == 1 && copenssl_SSL_CTX_set_max_proto_version(ctx, max) == 1,
                        "SSL_CTX_set_min/max_proto_version")
        } else {
            guard copenssl_SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) == 1 else {
                throw .invalidConfiguration("this OpenSSL cannot do TLS 1.3")
            }
        }
        // One long-lived connection per migration: resumption buys nothing, and unread
        // tickets make a write-only client's close() reset the connection, and the peer loses the tail of the data.
        try require(SSL_CTX_set_num_tickets(ctx, 0) == 1, "SSL_CTX_set_num_tickets")
        _ = copenssl_SSL_CTX_set_session_cache_mode(ctx, COPENSSL_SSL_SESS_CACHE_OFF)  // returns the previous mode, not a status
        // A retried SSL_write may pass the same bytes at a different address.
        try require(copenssl_SSL_CTX_set_mode(ctx, COPENSSL_SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER) & COPENSSL_SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER != 0,
                    "SSL_CTX_set_mode(ACCEPT_MOVING_WRITE_BUFFER)")
        // Bulk transfer: read ahead into a large buffer, so one read(2) brings many
        // 16 KiB records instead of two syscalls (header, body) per record.
        _ = copenssl_SSL_CTX_set_read_ahead(ctx, 1)  // returns the previous setting, not a status
        SSL_CTX_set_default_read_buffer_len(ctx, 256 << 10)
        // An encrypted key must fail, not prompt for a passphrase on the terminal.
        SSL_CTX_set_default_passwd_cb(ctx) { _, _, _, _ in -1 }

        ERR_clear_error()
        guard SSL_CTX_load_verify_locations(ctx, config.caFile, nil) == 1 else {
            throw .invalidPEM(path: config.caFile, detail: OpenSSLError.summary(OpenSSLError.drainQueue()))
        }
        var facts = OwnCertificateFacts()
        if DevelopmentCertificates.bundleContainsOne(config.caFile) {
            guard config.allowDevelopmentCertificates else { throw .developmentCertificatesRefused(path: config.caFile) }
            facts.development = true
        }

        if !hooks.omitCertificate {
            ERR_clear_error()
            guard SSL_CTX_use_certificate_chain_file(ctx, config.certificateFile) == 1,
                  let own = SSL_CTX_get0_certificate(ctx) else {
                throw .invalidPEM(path: config.certificateFile, detail: OpenSSLError.summary(OpenSSLError.drainQueue()))
            }
            if DevelopmentCertificates.contains(own) {
                guard config.allowDevelopmentCertificates else {
                    throw .developmentCertificatesRefused(path: config.certificateFile)
                }
                facts.development = true
            }
            facts.notAfter = Certificate.notAfterEpochSeconds(own)
            // Refused here, not as a warning: every peer would refuse this certificate,
            // and "peer says: certificate expired" is a worse message than this one.
            if !hooks.skipOwnValidityCheck {
                if Certificate.isExpired(own) {
                    throw .ownCertificateExpired(path: config.certificateFile, subject: Certificate.subject(own),
                                                 notAfter: Certificate.notAfter(own))
                }
                if Certificate.isNotYetValid(own) {
                    throw .ownCertificateNotYetValid(path: config.certificateFile, subject: Certificate.subject(own),
                                                     notBefore: Certificate.notBefore(own))
                }
            }
            if !Certificate.permits(own, role: role) {
                throw .ownCertificateWrongUsage(path: config.certificateFile, subject: Certificate.subject(own), role: role)
            }
            // The committed development keys cannot be kept private (git stores no 0600),
            // and need not be: they are public by design.
            if !(facts.development && DevelopmentCertificates.contains(own)) {
                try checkPrivateKeyMode(config.privateKeyFile)
            }
            ERR_clear_error()
            if SSL_CTX_use_PrivateKey_file(ctx, config.privateKeyFile, SSL_FILETYPE_PEM) != 1 {
                let queue = OpenSSLError.drainQueue()
                if queue.contains(where: { $0.library == ERR_LIB_X509 &&
                    ($0.reason == X509_R_KEY_VALUES_MISMATCH || $0.reason == X509_R_KEY_TYPE_MISMATCH) }) {
                    throw .keyDoesNotMatchCertificate(certificate: config.certificateFile, key: config.privateKeyFile)
                }
                if queue.contains(where: { $0.library == ERR_LIB_PEM &&
                    ($0.reason == PEM_R_BAD_PASSWORD_READ || $0.reason == PEM_R_PROBLEMS_GETTING_PASSWORD) }) {
                    throw .encryptedPrivateKey(path: config.privateKeyFile)
                }
                throw .invalidPEM(path: config.privateKeyFile, detail: OpenSSLError.summary(queue))
            }
            guard SSL_CTX_check_private_key(ctx) == 1 else {
                _ = OpenSSLError.drainQueue()
                throw .keyDoesNotMatchCertificate(certificate: config.certificateFile, key: config.privateKeyFile)
            }
        }

        if let crlFile = config.crlFile { try loadCRLs(crlFile, into: ctx) }

        // Mutual authentication, always: a server demands the client's certificate.
        let mode = role == .server ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER
        SSL_CTX_set_verify(ctx, mode, peerVerifyCallback)
        return facts
    }

    /// A key that group or others can read is refused, as ssh refuses one.
    private static func checkPrivateKeyMode(_ path: String) throws(TLSError) {
        var info = stat()
        guard stat(path, &info) == 0 else { throw .fileUnreadable(path: path, errno: .current) }
        if info.st_mode & 0o077 != 0 { throw .privateKeyTooOpen(path: path, mode: info.st_mode) }
    }

    /// Every CRL in the PEM file goes into the trust store; X509_V_FLAG_CRL_CHECK then makes
    /// OpenSSL check the peer's (leaf) certificate against its issuer's CRL.
    private static func loadCRLs(_ path: String, into ctx: OpaquePointer) throws(TLSError) {
        ERR_clear_error()
        guard let bio = BIO_new_file(path, "r") else {
            throw .invalidPEM(path: path, detail: OpenSSLError.summary(OpenSSLError.drainQueue()))
        }
        defer { BIO_free(bio) }
        let store = SSL_CTX_get_cert_store(ctx)
        var count = 0
        while let crl = PEM_read_bio_X509_CRL(bio, nil, nil, nil) {
            let added = X509_STORE_add_crl(store, crl)
            X509_CRL_free(crl)
            guard added == 1 else {
                throw .invalidPEM(path: path, detail: "X509_STORE_add_crl: " + OpenSSLError.summary(OpenSSLError.drainQueue()))
            }
            count += 1
        }
        let queue = OpenSSLError.drainQueue()  // the read that ends the loop always fails
        guard count > 0 else {
            throw .invalidPEM(path: path, detail: "no X509 CRL found (\(OpenSSLError.summary(queue)))")
        }
        try require(X509_STORE_set_flags(store, UInt(X509_V_FLAG_CRL_CHECK)) == 1, "X509_STORE_set_flags(CRL_CHECK)")
    }

    /// A setter OpenSSL reports as failed leaves the context other than configured: refuse it.
    private static func require(_ ok: Bool, _ call: String) throws(TLSError) {
        guard ok else { throw .invalidConfiguration("\(call) failed: " + OpenSSLError.summary(OpenSSLError.drainQueue())) }
    }
}

/// Ignores SIGPIPE process-wide (writes to a closed peer become EPIPE errors).
public func ignoreSIGPIPE() {
    signal(SIGPIPE, SIG_IGN)
}

/// OpenSSL writes to sockets with write(2), which raises SIGPIPE on a closed peer and would
/// kill the process. Contexts ignore it unless the application installed its own handler.
private func ignoreSIGPIPEIfDefault() {
    var current = sigaction()
    guard sigaction(SIGPIPE, nil, &current) == 0 else { return }
    if current.__sigaction_handler.sa_handler == nil {  // SIG_DFL
        signal(SIGPIPE, SIG_IGN)
    }
}
