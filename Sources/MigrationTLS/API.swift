// CONTRACT STUB — the public surface the engine codes against. The MigrationTLS
// owner replaces these bodies (and may split this file); signatures stay.

public enum TLSError: Error, Sendable, Equatable, CustomStringConvertible {
    case stub(String)
    public var description: String { fatalError("stub") }
}

/// Where to listen or connect: `HOST:PORT`, `[V6]:PORT`, or `unix:PATH`.
public enum Endpoint: Sendable, Equatable, CustomStringConvertible {
    case tcp(host: String, port: UInt16)
    case unix(path: String)
    public init(parsing text: String) throws { fatalError("stub") }
    public var description: String { fatalError("stub") }
}

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
}

public enum TLSRole: Sendable { case client, server }

/// A loaded, checked configuration (certs parsed, key matched) for one role.
public final class TLSContext: @unchecked Sendable {
    public init(configuration: TLSConfiguration, role: TLSRole) throws { fatalError("stub") }
}

/// A mutually authenticated TLS 1.3 stream. Full duplex: one thread may read
/// while another writes (non-blocking fd + poll inside; no lock held while waiting).
public final class TLSStream: @unchecked Sendable {
    /// The peer certificate's verified name (the one that matched).
    public var peerName: String { fatalError("stub") }
    /// Writes all of `bytes` or throws.
    public func write(_ bytes: [UInt8]) throws { fatalError("stub") }
    /// Up to `maxCount` bytes; [] only after the peer's clean close_notify. A close
    /// without close_notify throws a truncation error. Throws a timeout error after
    /// `readTimeoutSeconds` (if set) without any byte.
    public func read(maxCount: Int) throws -> [UInt8] { fatalError("stub") }
    public var readTimeoutSeconds: Double? { get { fatalError("stub") } set { fatalError("stub") } }
    public var writeTimeoutSeconds: Double? { get { fatalError("stub") } set { fatalError("stub") } }
    /// Sends close_notify and waits (bounded) for the peer's.
    public func shutdown() throws { fatalError("stub") }
    /// Closes the socket now (idempotent); unblocks a blocked reader/writer with an error.
    public func close() { fatalError("stub") }
}

/// Listens on an endpoint; each `accept` returns an authenticated stream.
public final class TLSListener: @unchecked Sendable {
    public init(endpoint: Endpoint, context: TLSContext) throws { fatalError("stub") }
    /// The bound endpoint (with the real port when 0 was asked).
    public var boundEndpoint: Endpoint { fatalError("stub") }
    public func accept(timeoutSeconds: Double?) throws -> TLSStream { fatalError("stub") }
    public func close() { fatalError("stub") }
}

public enum TLSConnector {
    public static func connect(to endpoint: Endpoint, context: TLSContext, timeoutSeconds: Double) throws -> TLSStream {
        fatalError("stub")
    }
}

/// Ignores SIGPIPE process-wide (writes to a closed peer become EPIPE errors).
public func ignoreSIGPIPE() { fatalError("stub") }
