import Foundation
import Testing
@testable import MigrationTLS
import TestSupport

extension Result {
    var tlsError: TLSError? {
        if case let .failure(error) = self { return error as? TLSError }
        return nil
    }
}

let loopback = Endpoint.tcp(host: "127.0.0.1", port: 0)

/// A connected, authenticated pair; the server side is accepted on its own thread.
func connectedPair(server: TLSContext, client: TLSContext, endpoint: Endpoint = loopback)
    throws -> (server: TLSStream, client: TLSStream) {
    let listener = try TLSListener(endpoint: endpoint, context: server)
    defer { listener.close() }
    let accepted = background { try listener.accept(timeoutSeconds: 10) }
    let client = try TLSConnector.connect(to: listener.boundEndpoint, context: client, timeoutSeconds: 5)
    return (try accepted.join(), client)
}

/// Runs one handshake that is expected to fail and reports what each side saw. The client
/// reads after connecting, because a TLS 1.3 client learns of its rejection only then.
func failedHandshake(server: TLSContext, client: TLSContext) throws
    -> (server: TLSError?, client: TLSError?) {
    let listener = try TLSListener(endpoint: loopback, context: server)
    defer { listener.close() }
    let accepted = background {
        let stream = try listener.accept(timeoutSeconds: 10)
        stream.close()  // accepted although it should not have been: end the client's read
    }
    let clientResult = Result<Void, any Error> {
        let stream = try TLSConnector.connect(to: listener.boundEndpoint, context: client, timeoutSeconds: 5)
        defer { stream.close() }
        stream.readTimeoutSeconds = 5
        _ = try stream.read(maxCount: 1)
    }
    let serverResult = accepted.wait(timeout: 60)
    if case let .failure(error) = serverResult, !(error is TLSError) { throw error }
    return (serverResult.tlsError, clientResult.tlsError)
}

/// A deterministic stream of distinct 1 MiB chunks: one pseudo-random block, each chunk
/// stamped with its index, so a lost, repeated or reordered chunk changes the digest.
struct ChunkGenerator {
    static let chunkSize = 1 << 20
    private let base: [UInt8]
    init(seed: UInt64) {
        var state = seed | 1
        var block = [UInt8](repeating: 0, count: Self.chunkSize)
        for i in 0..<block.count {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            block[i] = UInt8(truncatingIfNeeded: state >> 33)
        }
        base = block
    }
    func chunk(_ index: Int) -> [UInt8] {
        var chunk = base
        withUnsafeBytes(of: UInt64(index).littleEndian) { stamp in
            for i in 0..<8 { chunk[i] = stamp[i] }
        }
        return chunk
    }
}
