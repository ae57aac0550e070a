import Foundation
import Testing
@testable import MigrationTLS
import TestSupport

extension TLSTests {
    /// Writes gather TLS records into large socket writes, and every write call
    /// still hands all its bytes to the socket before it returns.
    @Suite struct WriteCoalescing {
        /// write(2) calls this thread has made (the kernel's per-thread count).
        static func threadWriteSyscalls() throws -> Int {
            let io = try String(contentsOfFile: "/proc/thread-self/io", encoding: .utf8)
            guard let line = io.split(separator: "\n").first(where: { $0.hasPrefix("syscw:") }),
                  let count = Int(line.dropFirst("syscw:".count).trimmingCharacters(in: .whitespaces)) else {
                throw CocoaError(.fileReadCorruptFile)
            }
            return count
        }

        @Test func aMebibyteGoesOutInAFewSocketWrites() throws {
            let (server, client) = try Stream.contexts()
            let (s, c) = try connectedPair(server: server, client: client)
            defer { s.close(); c.close() }
            s.readTimeoutSeconds = 30
            c.writeTimeoutSeconds = 30
            let payload = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            let receiving = background { () -> [UInt8] in
                var got: [UInt8] = []
                while got.count < payload.count {
                    let bytes = try s.read(maxCount: 1 << 20)
                    if bytes.isEmpty { break }
                    got += bytes
                }
                return got
            }
            let before = try Self.threadWriteSyscalls()
            try c.write(payload)
            let writes = try Self.threadWriteSyscalls() - before
            #expect(try receiving.join(timeout: 60) == payload)
            // 64 records of 16 KiB, gathered 256 KiB at a time: 4 writes, a few more
            // when the socket takes part of one; one per record (64) without the buffer.
            #expect(writes >= 4 && writes <= 16, "\(writes) write(2) calls for 1 MiB")
        }

        /// Nothing waits in the buffer after `write` returns: the peer reads a small
        /// message with no later write to push it out (keep-alives, ABORT).
        @Test func aSmallWriteReachesThePeerAtOnce() throws {
            let (server, client) = try Stream.contexts()
            let (s, c) = try connectedPair(server: server, client: client)
            defer { s.close(); c.close() }
            s.readTimeoutSeconds = 10
            c.readTimeoutSeconds = 10
            for round in 0..<3 {
                let message = Array("keep-alive \(round)".utf8)
                try c.write(message)
                #expect(try s.read(maxCount: 256) == message)
                try s.write(message)  // and the other way, on the accepting side's stream
                #expect(try c.read(maxCount: 256) == message)
            }
        }
    }
}
