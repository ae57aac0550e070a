import Glibc
import SyncPrimitives

/// Listens on an endpoint; each `accept` returns an authenticated stream.
public final class TLSListener: Sendable {
    private let socket: Socket
    private let context: TLSContext
    private let unixPath: String?
    private let unlinked = LockedValue(false)
    /// The bound endpoint (with the real port when 0 was asked).
    public let boundEndpoint: Endpoint

    public init(endpoint: Endpoint, context: TLSContext) throws(TLSError) {
        guard context.role == .server else {
            throw TLSError.invalidConfiguration("a listener needs a server-role TLSContext")
        }
        try context.checkEndpoint(endpoint)
        socket = try Socket.listen(on: endpoint)
        self.context = context
        switch endpoint {
        case let .unix(path):
            unixPath = path
            boundEndpoint = endpoint
        case .tcp:
            unixPath = nil
            do throws(TLSError) { boundEndpoint = try socket.localTCPEndpoint() } catch { socket.close(); throw error }
        }
    }

    /// For initializers that obtain the listening socket another way (InheritedListener.swift).
    init(socket: Socket, context: TLSContext, boundEndpoint: Endpoint) {
        self.socket = socket
        self.context = context
        self.unixPath = nil  // a socket file this listener did not create is not its to remove
        self.boundEndpoint = boundEndpoint
    }

    deinit { close() }

    /// Waits up to `timeoutSeconds` (nil: forever) for a peer, then runs the server
    /// handshake (bounded by the configuration's handshake timeout). A peer that fails
    /// the handshake makes this call throw; the listener stays usable.
    public func accept(timeoutSeconds: Double?) throws(TLSError) -> TLSStream {
        try socket.enter()
        defer { socket.leave() }
        let deadline = timeoutSeconds.map { monotonicNow() + $0 }
        while true {
            if let connection = try socket.acceptConnection() {
                return try TLSStream.handshake(
                    socket: connection, context: context,
                    deadline: monotonicNow() + context.configuration.handshakeTimeoutSeconds,
                    interruptibleBy: socket)
            }
            switch try socket.wait(for: Int16(POLLIN), until: deadline) {
            case .ready: continue
            case .timedOut: throw TLSError.acceptTimeout(seconds: timeoutSeconds ?? 0)
            case .woken: throw TLSError.closed
            }
        }
    }

    /// Waits up to `timeoutSeconds` (nil: forever) for a peer and returns its TCP
    /// connection before any TLS: the caller runs `handshake()` where it wants (a
    /// thread of its own, so one slow peer does not hold up the next).
    public func acceptPending(timeoutSeconds: Double?) throws(TLSError) -> PendingConnection {
        try socket.enter()
        defer { socket.leave() }
        let deadline = timeoutSeconds.map { monotonicNow() + $0 }
        while true {
            if let connection = try socket.acceptConnection() { return PendingConnection(socket: connection, listener: self) }
            switch try socket.wait(for: Int16(POLLIN), until: deadline) {
            case .ready: continue
            case .timedOut: throw TLSError.acceptTimeout(seconds: timeoutSeconds ?? 0)
            case .woken: throw TLSError.closed
            }
        }
    }

    fileprivate func handshake(_ connection: Socket) throws(TLSError) -> TLSStream {
        do { try socket.enter() } catch { connection.close(); throw error }
        defer { socket.leave() }
        return try TLSStream.handshake(
            socket: connection, context: context,
            deadline: monotonicNow() + context.configuration.handshakeTimeoutSeconds,
            interruptibleBy: socket)
    }

    /// Stops listening (idempotent); a blocked `accept` throws `.closed`.
    public func close() {
        socket.close()
        if let unixPath, unlinked.withLock({ done in defer { done = true }; return !done }) {
            unlink(unixPath)
        }
    }
}

/// A peer's TCP connection the listener accepted, not yet authenticated.
public struct PendingConnection: Sendable {
    fileprivate let socket: Socket
    fileprivate let listener: TLSListener

    /// The server handshake (bounded by the configuration's handshake timeout; the
    /// listener's `close` interrupts it). A failed handshake closes the connection.
    public func handshake() throws(TLSError) -> TLSStream { try listener.handshake(socket) }
}
