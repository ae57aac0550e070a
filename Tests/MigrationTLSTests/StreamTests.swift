import Foundation
import Testing
@testable import MigrationTLS
import MigrationWire
import TestSupport

extension TLSTests {
    @Suite struct Stream {
        static func contexts() throws -> (server: TLSContext, client: TLSContext) {
            let pki = try TestPKI.get()
            return (try TLSContext(configuration: pki.serverConfig(), role: .server),
                    try TLSContext(configuration: pki.clientConfig(), role: .client))
        }

        /// Streams `chunks` MiB from `writer` to `reader`; returns both digests and byte counts.
        static func transfer(from writer: TLSStream, to reader: TLSStream, chunks: Int, seed: UInt64) throws
            -> (sent: [UInt8], received: [UInt8], receivedCount: Int) {
            let receiving = background { () -> ([UInt8], Int) in
                let digest = SHA256Digest()
                var count = 0
                while count < chunks * ChunkGenerator.chunkSize {
                    let bytes = try reader.read(maxCount: ChunkGenerator.chunkSize)
                    if bytes.isEmpty { break }
                    digest.update(bytes)
                    count += bytes.count
                }
                return (digest.finalize(), count)
            }
            let generator = ChunkGenerator(seed: seed)
            let digest = SHA256Digest()
            for index in 0..<chunks {
                let chunk = generator.chunk(index)
                digest.update(chunk)
                try writer.write(chunk)
            }
            let (received, count) = try receiving.join(timeout: 120)
            return (digest.finalize(), received, count)
        }

        @Test func transfers256MiBIntact() throws {
            let (server, client) = try Self.contexts()
            let (s, c) = try connectedPair(server: server, client: client)
            defer { s.close(); c.close() }
            s.readTimeoutSeconds = 30
            c.writeTimeoutSeconds = 30
            let started = Date()
            let result = try Self.transfer(from: c, to: s, chunks: 256, seed: 7)
            let seconds = Date().timeIntervalSince(started)
            #expect(result.receivedCount == 256 << 20)
            #expect(result.sent == result.received)
            print("256 MiB through TLSStream (debug build, with hashing): \(String(format: "%.2f", seconds)) s")
        }

        @Test func cleanShutdownReadsEmptyOnTheOtherSide() throws {
            let (server, client) = try Self.contexts()
            let (s, c) = try connectedPair(server: server, client: client)
            defer { s.close(); c.close() }
            s.readTimeoutSeconds = 5
            try c.write(Array("last words".utf8))
            let closing = background { try c.shutdown() }  // waits for the server's close_notify
            var received: [UInt8] = []
            while true {
                let bytes = try s.read(maxCount: 4)
                if bytes.isEmpty { break }
                received += bytes
            }
            #expect(received == Array("last words".utf8))
            #expect(try s.read(maxCount: 4) == [])  // and stays at end of stream
            try s.shutdown()
            try closing.join(timeout: 5)
        }

        @Test func peerClosingWithoutCloseNotifyIsTruncation() throws {
            let (server, client) = try Self.contexts()
            let (s, c) = try connectedPair(server: server, client: client)
            defer { s.close() }
            s.readTimeoutSeconds = 5
            try c.write([UInt8](repeating: 9, count: 1000))
            c.close()  // no close_notify
            var received = 0
            let error = #expect(throws: TLSError.self) {
                while true {
                    let bytes = try s.read(maxCount: 4096)
                    if bytes.isEmpty { return }
                    received += bytes.count
                }
            }
            #expect(error == .truncated)
            #expect(received == 1000)
        }

        @Test func fullDuplexReadAndWriteFromTwoThreadsEachSide() throws {
            // Both sides write 32 MiB while reading 32 MiB: far beyond the socket buffers, so a
            // write that held the stream against the reader would deadlock (then time out).
            let (server, client) = try Self.contexts()
            let (s, c) = try connectedPair(server: server, client: client)
            defer { s.close(); c.close() }
            for stream in [s, c] { stream.readTimeoutSeconds = 20; stream.writeTimeoutSeconds = 20 }
            let serverToClient = background { try Self.transfer(from: s, to: c, chunks: 32, seed: 1) }
            let clientToServer = try Self.transfer(from: c, to: s, chunks: 32, seed: 2)
            let other = try serverToClient.join(timeout: 60)
            #expect(clientToServer.sent == clientToServer.received)
            #expect(other.sent == other.received)
            #expect(clientToServer.receivedCount == 32 << 20 && other.receivedCount == 32 << 20)
            #expect(clientToServer.sent != other.sent)
        }

        @Test func closeUnblocksABlockedReaderAndIsIdempotent() throws {
            let (server, client) = try Self.contexts()
            let (s, c) = try connectedPair(server: server, client: client)
            defer { c.close() }
            let reading = background { try s.read(maxCount: 16) }  // no timeout: blocks until closed
            usleep(200_000)
            let started = Date()
            s.close()
            s.close()
            #expect(reading.wait(timeout: 5).tlsError == .closed)
            #expect(Date().timeIntervalSince(started) < 2)
            #expect(throws: TLSError.closed) { try s.write([1]) }
            // The peer sees the connection end without close_notify.
            c.readTimeoutSeconds = 5
            #expect(throws: TLSError.truncated) { try c.read(maxCount: 16) }
        }

        @Test func readTimeoutLeavesTheStreamUsable() throws {
            let (server, client) = try Self.contexts()
            let (s, c) = try connectedPair(server: server, client: client)
            defer { s.close(); c.close() }
            s.readTimeoutSeconds = 0.2
            #expect(throws: TLSError.readTimeout(seconds: 0.2)) { try s.read(maxCount: 16) }
            try c.write([1, 2, 3])
            #expect(try s.read(maxCount: 16) == [1, 2, 3])
        }

        @Test func writeTimeoutWhenThePeerStopsReading() throws {
            let (server, client) = try Self.contexts()
            let (s, c) = try connectedPair(server: server, client: client)
            defer { s.close(); c.close() }
            c.writeTimeoutSeconds = 0.3
            let chunk = [UInt8](repeating: 5, count: 1 << 20)
            let error = #expect(throws: TLSError.self) {
                for _ in 0..<256 { try c.write(chunk) }  // the server never reads
            }
            #expect(error == .writeTimeout(seconds: 0.3))
        }

        @Test func aUNIXSocketEndpointCarriesAnAuthenticatedStream() throws {
            let (server, client) = try Self.contexts()
            let path = NSTemporaryDirectory() + "vfio-migrate-tls-\(getpid()).sock"
            let listener = try TLSListener(endpoint: .unix(path: path), context: server)
            #expect(listener.boundEndpoint == .unix(path: path))
            let accepted = background { try listener.accept(timeoutSeconds: 10) }
            let c = try TLSConnector.connect(to: .unix(path: path), context: client, timeoutSeconds: 5)
            let s = try accepted.join()
            defer { s.close(); c.close() }
            let result = try Self.transfer(from: c, to: s, chunks: 4, seed: 3)
            #expect(result.sent == result.received)
            listener.close()
            #expect(!FileManager.default.fileExists(atPath: path))
        }
    }
}
