public enum TLSConnector {
    /// Connects within `timeoutSeconds`, then runs the client handshake (bounded by the
    /// configuration's handshake timeout), verifying the server's certificate and name.
    public static func connect(to endpoint: Endpoint, context: TLSContext, timeoutSeconds: Double) throws(TLSError) -> TLSStream {
        guard context.role == .client else {
            throw .invalidConfiguration("connecting needs a client-role TLSContext")
        }
        try context.checkEndpoint(endpoint)
        let socket = try Socket.connect(to: endpoint, timeoutSeconds: timeoutSeconds)
        return try TLSStream.handshake(socket: socket, context: context,
                                       deadline: monotonicNow() + context.configuration.handshakeTimeoutSeconds)
    }
}
