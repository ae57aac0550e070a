internal import COpenSSL
import Glibc
import SystemErrno
import SystemPackage
import SyncPrimitives

/// Owns one SSL*. Every call on it happens with `TLSStream.io` held.
final class SSLHandle: @unchecked Sendable {  // owns an SSL*, used only under TLSStream.io
    let pointer: OpaquePointer
    init(_ pointer: OpaquePointer) { self.pointer = pointer }
    deinit { SSL_free(pointer) }  // never touches the fd (SSL_set_fd does not own it)
}

/// A mutually authenticated TLS 1.3 stream. Full duplex: one thread may read
/// while another writes (non-blocking fd + poll inside; no lock held while waiting).
///
/// Design: the socket is non-blocking; each SSL_read_ex/SSL_write_ex/SSL_shutdown runs
/// under `io`, and a WANT_READ/WANT_WRITE releases `io` before waiting in poll(2), so a
/// reader blocked on an idle peer never stalls a writer (and vice versa).
public final class TLSStream: Sendable {
    private let socket: Socket
    private let ssl: SSLHandle
    /// Kept alive for the SSL's app-data slot, which the verify callback reads.
    private let verification: PeerVerification
    private let matchedName: String

    private struct IOState {
        /// A fatal TLS error is final: OpenSSL must not be called again, later calls rethrow it.
        var failure: TLSError?
    }
    private let io = LockedValue(IOState())
    private let timeouts = LockedValue<(read: Double?, write: Double?)>((nil, nil))

    /// Bound on how long `shutdown()` waits for the peer's close_notify or EOF.
    let shutdownTimeoutSeconds: Double = 10

    private init(socket: Socket, ssl: SSLHandle, verification: PeerVerification, matchedName: String,
                 security: SessionSecurity, applicationProtocol: String?) {
        self.applicationProtocol = applicationProtocol
        self.socket = socket
        self.ssl = ssl
        self.verification = verification
        self.matchedName = matchedName
        self.security = security
    }

    /// The peer certificate's verified name (the one that matched).
    public var peerName: String { matchedName }
    /// The kernel's view of the connection (TCPInfo.swift); nil when closed or not TCP.
    public var tcpInfo: TCPInfo? { socket.tcpInfo() }

    /// What an operator should know about the certificates of this session.
    public let security: SessionSecurity

    /// The ALPN identifier the handshake selected; nil when none was.
    public let applicationProtocol: String?

    /// RFC 8446 §7.5 exporter (`SSL_export_keying_material` with a context): `length`
    /// bytes both ends of this connection derive alike and nobody else can. It only
    /// reads the handshake's key schedule, so it works after the connection broke too
    /// (a read may already have met the end of a stream whose data is still decoded).
    public func exportKeyingMaterial(label: String, context: [UInt8], length: Int) throws(TLSError) -> [UInt8] {
        let label = Array(label.utf8)
        return try io.withLock { (_: inout IOState) throws(TLSError) -> [UInt8] in
            var out = [UInt8](repeating: 0, count: length)
            ERR_clear_error()
            let ok = SSL_export_keying_material(ssl.pointer, &out, length, label, label.count, context, context.count, 1)
            guard ok == 1 else {
                throw TLSError.protocolError(detail: "SSL_export_keying_material: " + OpenSSLError.summary(OpenSSLError.drainQueue()))
            }
            return out
        }
    }

    /// Seconds a `read` may wait without receiving a byte; nil waits forever.
    public var readTimeoutSeconds: Double? {
        get { timeouts.withLock { $0.read } }
        set { timeouts.withLock { $0.read = newValue } }
    }
    /// Seconds a `write` may make no progress (peer not reading); nil waits forever.
    public var writeTimeoutSeconds: Double? {
        get { timeouts.withLock { $0.write } }
        set { timeouts.withLock { $0.write = newValue } }
    }

    private enum Step: Sendable {
        case done(Int)
        case endOfStream
        case wait(Int16)
        case fail(TLSError)
    }

    // MARK: Handshake

    /// Runs the TLS handshake on a connected socket. On failure the socket is closed
    /// gracefully (so the peer can read our alert) and the specific reason thrown.
    static func handshake(socket: Socket, context: TLSContext, deadline: Double,
                          interruptibleBy other: Socket? = nil) throws(TLSError) -> TLSStream {
        ERR_clear_error()
        guard let raw = SSL_new(context.ctx) else {
            socket.close()
            throw .handshakeFailed(detail: "SSL_new: " + OpenSSLError.summary(OpenSSLError.drainQueue()))
        }
        let ssl = SSLHandle(raw)
        let verification = PeerVerification(expectedNames: context.expectedPeerNames)
        // Without the app data the verify callback refuses every peer; without the fd
        // nothing moves: either failing is a setup error, reported as such.
        var setup = SSL_set_ex_data(raw, 0, Unmanaged.passUnretained(verification).toOpaque()) == 1
            && SSL_set_fd(raw, socket.fd) == 1
        if setup && context.role == .client {
            // SNI only for DNS names; a server may use it, we never depend on it.
            let name = context.configuration.peerName
            if !Certificate.isIPAddress(name) { setup = copenssl_SSL_set_tlsext_host_name(raw, name) == 1 }
        }
        guard setup else {
            socket.close()
            throw .handshakeFailed(detail: "SSL setup: " + OpenSSLError.summary(OpenSSLError.drainQueue()))
        }
        do throws(TLSError) {
            while true {
                ERR_clear_error()
                let r = context.role == .client ? SSL_connect(raw) : SSL_accept(raw)
                if r == 1 { break }
                let savedErrno = Errno.current
                let e = SSL_get_error(raw, r)
                let events: Int16
                switch e {
                case SSL_ERROR_WANT_READ: events = Int16(POLLIN)
                case SSL_ERROR_WANT_WRITE: events = Int16(POLLOUT)
                default:
                    throw TLSError.fromFailedCall(sslError: e, errno: savedErrno, duringHandshake: true,
                                                  verification: verification)
                }
                switch try socket.wait(for: events, until: deadline, alsoWatching: other) {
                case .ready: continue
                case .timedOut: throw TLSError.handshakeTimeout(seconds: context.configuration.handshakeTimeoutSeconds)
                case .woken: throw TLSError.closed
                }
            }
            // The callback matched a name, or refused the handshake; never neither.
            guard let name = verification.matchedName else {
                throw TLSError.handshakeFailed(detail: "the peer's name was not verified")
            }
            try bufferWrites(raw)
            let security = SessionSecurity(developmentCertificates: context.usesDevelopmentCertificates,
                                           ownCertificateNotAfter: context.ownCertificateNotAfter,
                                           peerCertificateNotAfter: peerNotAfter(raw))
            return TLSStream(socket: socket, ssl: ssl, verification: verification, matchedName: name, security: security,
                             applicationProtocol: selectedApplicationProtocol(raw))
        } catch {
            _ = OpenSSLError.drainQueue()
            socket.closeGracefully(lingerSeconds: 0.5)
            throw error
        }
    }

    /// Bytes of TLS records gathered before they go to the socket in one write(2).
    static let writeBufferBytes = 256 << 10

    /// Puts a BIO_f_buffer in front of the socket for writes only (reads keep the
    /// socket BIO): SSL_write cuts 16 KiB records, which would each be a write(2);
    /// gathered, a MiB frame takes 4 writes instead of 65. Every write call flushes
    /// at its end (`flushWrites`), so nothing waits in the buffer after it returns.
    /// Set after the handshake, which OpenSSL buffers and flushes by itself.
    private static func bufferWrites(_ ssl: OpaquePointer) throws(TLSError) {
        ERR_clear_error()
        guard let socketBIO = SSL_get_wbio(ssl), let buffer = BIO_new(BIO_f_buffer()) else {
            throw .handshakeFailed(detail: "BIO_new(BIO_f_buffer): " + OpenSSLError.summary(OpenSSLError.drainQueue()))
        }
        guard copenssl_BIO_set_write_buffer_size(buffer, writeBufferBytes) == 1, BIO_up_ref(socketBIO) == 1 else {
            BIO_free(buffer)
            throw .handshakeFailed(detail: "BIO_set_write_buffer_size: " + OpenSSLError.summary(OpenSSLError.drainQueue()))
        }
        // The chain holds the socket BIO (one reference), the SSL the chain; the
        // old write reference to the socket BIO, which the read side shares, is dropped.
        SSL_set0_wbio(ssl, BIO_push(buffer, socketBIO))
    }

    private static func selectedApplicationProtocol(_ ssl: OpaquePointer) -> String? {
        var data: UnsafePointer<UInt8>?
        var length: UInt32 = 0
        SSL_get0_alpn_selected(ssl, &data, &length)
        guard let data, length > 0 else { return nil }
        return String(decoding: UnsafeBufferPointer(start: data, count: Int(length)), as: UTF8.self)
    }

    private static func peerNotAfter(_ ssl: OpaquePointer) -> Int64? {
        guard let cert = SSL_get1_peer_certificate(ssl) else { return nil }
        defer { X509_free(cert) }
        return Certificate.notAfterEpochSeconds(cert)
    }

    // MARK: I/O

    /// Writes all of `bytes` or throws.
    public func write(_ bytes: [UInt8]) throws(TLSError) {
        try write(bytes.span.bytes, flush: true)
    }

    /// Writes all of `bytes` (guest pages lent from their mapping, a slice of a frame)
    /// or throws. `flush: false` leaves the last records in the write buffer, for the
    /// next piece of the same frame: a frame written in pieces still leaves in 256 KiB
    /// writes, and the last piece's write sends what is left.
    public func write(_ bytes: RawSpan, flush: Bool) throws(TLSError) {
        guard !bytes.isEmpty || flush else { return }
        try socket.enter()
        defer { socket.leave() }
        // `withUnsafeBytes` only rethrows untyped: carry the TLSError out as a value.
        let failure: TLSError? = bytes.withUnsafeBytes { buffer in
            do throws(TLSError) {
                if buffer.count > 0 { try write(buffer) }
                if flush { try flushWrites() }
                return nil
            } catch { return error }
        }
        if let failure { throw failure }
    }

    /// Everything SSL_write accepted goes into TLS records in the write buffer; the
    /// caller flushes it (`flushWrites`).
    private func write(_ buffer: UnsafeRawBufferPointer) throws(TLSError) {
        while true {
            let step: Step = io.withLock { state in
                if let failure = state.failure { return .fail(failure) }
                ERR_clear_error()
                var written = 0
                // Partial writes are off: success means every byte went into TLS records.
                let r = SSL_write_ex(ssl.pointer, buffer.baseAddress, buffer.count, &written)
                if r == 1 { return .done(written) }
                let step = failedStep(r, state: &state)
                if case .fail(.connectionReset) = step, let alert = pendingAlert() {
                    state.failure = alert
                    return .fail(alert)
                }
                return step
            }
            switch step {
            case .done: return
            case .endOfStream: throw TLSError.protocolError(detail: "unexpected end of stream while writing")
            case let .fail(error): throw error
            case let .wait(events):
                try waitUntilWritable(events)
            }
        }
    }

    /// Sends what the write buffer still holds; waits while the socket is full, as a
    /// write does (or until `deadline`, for shutdown). A failure is final, as one of SSL_write's.
    private func flushWrites(deadline: Double? = nil) throws(TLSError) {
        while true {
            let step: Step = io.withLock { state in
                if let failure = state.failure { return .fail(failure) }
                ERR_clear_error()
                let wbio = SSL_get_wbio(ssl.pointer)
                if copenssl_BIO_flush(wbio) == 1 { return .done(0) }
                let savedErrno = Errno.current
                if copenssl_BIO_should_retry(wbio) == 1 { return .wait(Int16(POLLOUT)) }
                var error = TLSError.fromFailedCall(sslError: SSL_ERROR_SYSCALL, errno: savedErrno, duringHandshake: false,
                                                    verification: verification)
                if case .connectionReset = error, let alert = pendingAlert() { error = alert }
                state.failure = error
                return .fail(error)
            }
            switch step {
            case .done, .endOfStream: return
            case let .fail(error): throw error
            case let .wait(events):
                guard let deadline else { try waitUntilWritable(events); continue }
                switch try socket.wait(for: events, until: deadline) {
                case .ready: continue
                case .timedOut: throw TLSError.writeTimeout(seconds: shutdownTimeoutSeconds)
                case .woken: throw TLSError.closed
                }
            }
        }
    }

    /// How often a blocked write looks at `writeTimeoutSeconds` again.
    static let timeoutRecheckSeconds = 0.25

    /// Waits for the socket, re-reading `writeTimeoutSeconds` every quarter second: a
    /// session that fails shortens it, and a write already blocked on a peer that stopped
    /// reading must give up after that, not after the peer timeout it started with
    /// (the ABORT and the operator's error wait behind it).
    private func waitUntilWritable(_ events: Int16) throws(TLSError) {
        let started = monotonicNow()
        while true {
            let stall = writeTimeoutSeconds
            let slice = monotonicNow() + Self.timeoutRecheckSeconds
            let deadline = stall.map { min(started + $0, slice) } ?? slice
            switch try socket.wait(for: events, until: deadline) {
            case .ready: return
            case .woken: throw TLSError.closed
            case .timedOut:
                if let stall, monotonicNow() >= started + stall { throw TLSError.writeTimeout(seconds: stall) }
            }
        }
    }

    /// Up to `maxCount` bytes; [] only after the peer's clean close_notify. A close
    /// without close_notify throws a truncation error. Throws a timeout error after
    /// `readTimeoutSeconds` (if set) without any byte.
    public func read(maxCount: Int) throws(TLSError) -> [UInt8] {
        precondition(maxCount > 0, "read(maxCount:) needs room for at least one byte")
        // Decrypt straight into the result's storage: no intermediate copy, no zero-fill.
        return try [UInt8](unsafeUninitializedCapacity: maxCount) { (buffer, count) throws(TLSError) in
            count = try read(into: UnsafeMutableRawBufferPointer(buffer))
        }
    }

    /// As `read(maxCount:)`, decrypting straight into the caller's buffer (a frame
    /// decoder's): appends up to `span.freeCapacity` bytes, none only after the
    /// peer's clean close_notify.
    public func read(into span: inout OutputSpan<UInt8>) throws(TLSError) {
        precondition(span.freeCapacity > 0, "read(into:) needs room for at least one byte")
        try span.withUnsafeMutableBufferPointer { (buffer, count) throws(TLSError) in
            count += try read(into: UnsafeMutableRawBufferPointer(UnsafeMutableBufferPointer(rebasing: buffer[count...])))
        }
    }

    /// Fills up to all of `buffer` with what is available once at least one byte
    /// is; 0 at the end of the stream.
    private func read(into buffer: UnsafeMutableRawBufferPointer) throws(TLSError) -> Int {
        try socket.enter()
        defer { socket.leave() }
        let timeout = readTimeoutSeconds
        let deadline = timeout.map { monotonicNow() + $0 }
        let maxCount = buffer.count
        while true {
            let step: Step = io.withLock { state in
                if let failure = state.failure { return .fail(failure) }
                var total = 0
                // Keep reading records already available, up to maxCount, before returning.
                while total < maxCount {
                    ERR_clear_error()
                    var got = 0
                    let r = SSL_read_ex(ssl.pointer, buffer.baseAddress! + total, maxCount - total, &got)
                    if r == 1 { total += got; continue }
                    if total == 0 { return failedStep(r, state: &state) }
                    // Deliver what we have; a fatal error is remembered and thrown next call.
                    if case .fail = failedStep(r, state: &state) {}
                    break
                }
                return .done(total)
            }
            switch step {
            case let .done(n): return n
            case .endOfStream: return 0
            case let .fail(error): throw error
            case let .wait(events):
                switch try socket.wait(for: events, until: deadline) {
                case .ready: continue
                case .timedOut: throw TLSError.readTimeout(seconds: timeout ?? 0)
                case .woken: throw TLSError.closed
                }
            }
        }
    }

    /// Classifies a failed SSL_* call; call with `io` held, right after the call.
    private func failedStep(_ result: Int32, state: inout IOState) -> Step {
        let savedErrno = Errno.current
        let e = SSL_get_error(ssl.pointer, result)
        switch e {
        case SSL_ERROR_WANT_READ: return .wait(Int16(POLLIN))
        case SSL_ERROR_WANT_WRITE: return .wait(Int16(POLLOUT))
        case SSL_ERROR_ZERO_RETURN:
            _ = OpenSSLError.drainQueue()
            return .endOfStream
        default:
            let error = TLSError.fromFailedCall(sslError: e, errno: savedErrno, duringHandshake: false,
                                                verification: verification)
            state.failure = error
            return .fail(error)
        }
    }

    /// A peer that refuses us sends an alert, then closes; a client that only writes sees
    /// just the reset (TLS 1.3 client certificates are judged after the client's handshake
    /// ends). The alert may still sit unread in the socket: one non-blocking read finds it.
    private func pendingAlert() -> TLSError? {
        ERR_clear_error()
        var scratch = [UInt8](repeating: 0, count: 256)
        var got = 0
        let r = scratch.withUnsafeMutableBytes { SSL_read_ex(ssl.pointer, $0.baseAddress, $0.count, &got) }
        let savedErrno = Errno.current  // before SSL_get_error, which may make calls of its own
        guard r != 1 else { return nil }
        let e = SSL_get_error(ssl.pointer, r)
        let error = TLSError.fromFailedCall(sslError: e, errno: savedErrno, duringHandshake: false,
                                            verification: verification)
        if case .refusedByPeer = error { return error }
        if case .protocolVersion = error { return error }
        return nil
    }

    /// Sends close_notify and waits (bounded) for the peer's.
    public func shutdown() throws(TLSError) { _ = try shutdownConfirmingPeer() }

    /// `shutdown()`, returning whether the peer's close_notify arrived (false: it
    /// closed without one, so it may not have read everything we sent).
    public func shutdownConfirmingPeer() throws(TLSError) -> Bool {
        try socket.enter()
        defer { socket.leave() }
        let deadline = monotonicNow() + shutdownTimeoutSeconds
        // 1. Our close_notify.
        sendCloseNotify: while true {
            let step: Step = io.withLock { state in
                if let failure = state.failure { return .fail(failure) }
                ERR_clear_error()
                let r = SSL_shutdown(ssl.pointer)
                if r >= 0 { return .done(Int(r)) }  // 1: peer's already received too; 0: ours sent
                return failedStep(r, state: &state)
            }
            switch step {
            case .done(1), .endOfStream:  // the peer's close_notify had already arrived
                try? flushWrites(deadline: deadline)
                return true
            case .done:
                try flushWrites(deadline: deadline)
                break sendCloseNotify
            case let .fail(error): throw error
            case let .wait(events):
                switch try socket.wait(for: events, until: deadline) {
                case .ready: continue
                case .timedOut: throw TLSError.writeTimeout(seconds: shutdownTimeoutSeconds)
                case .woken: throw TLSError.closed
                }
            }
        }
        // 2. Discard whatever still arrives until the peer's close_notify or its EOF: a peer
        // that closed after reading everything is fine; a reset is not (data may be lost).
        var scratch = [UInt8](repeating: 0, count: 16384)
        while true {
            let step: Step = io.withLock { state in
                if let failure = state.failure { return .fail(failure) }
                ERR_clear_error()
                var got = 0
                let r = scratch.withUnsafeMutableBytes { SSL_read_ex(ssl.pointer, $0.baseAddress, $0.count, &got) }
                if r == 1 { return .done(got) }
                return failedStep(r, state: &state)
            }
            switch step {
            case .done: continue
            case .endOfStream: return true
            case .fail(.truncated): return false
            case let .fail(error): throw error
            case let .wait(events):
                switch try socket.wait(for: events, until: deadline) {
                case .ready: continue
                case .timedOut: throw TLSError.readTimeout(seconds: shutdownTimeoutSeconds)
                case .woken: throw TLSError.closed
                }
            }
        }
    }

    /// Closes the socket now (idempotent); unblocks a blocked reader/writer with an error.
    /// The peer sees the connection end without close_notify, i.e. as truncated.
    public func close() { socket.close() }
}
