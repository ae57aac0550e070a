import Foundation
import Testing
@testable import MigrationEngine
import MigrationTLS
import MigrationWire
import TestSupport

/// zstd is used only in a version-2 session and when both HELLOs list it; deflate is
/// what a peer without it gets (PROTOCOL.md §5.1, §9, §10). Both directions, against a
/// real peer and a recording one.
@Suite(.serialized)
struct ZstdNegotiationTests {
    /// What a source put on the wire: its HELLO's encodings and those its payloads used.
    struct Seen: Sendable { var hello: [Encoding] = []; var payloads: Set<String> = [] }

    /// A destination that announces `encodings`, decodes (and so checks) everything the
    /// source sends up to COMPLETE, and never answers READY: the source rolls back.
    func recordSource(policy: CompressionPolicy, destinationEncodings: [Encoding]) throws -> Seen {
        let pair = try SimPair(memoryPages: 256)
        let (server, client) = try Loopback.contexts(version: .v2)
        let listener = try TLSListener(endpoint: .tcp(host: "127.0.0.1", port: 0), context: server)
        defer { listener.close() }
        let recorded = background { () throws -> Seen in
            let stream = try listener.accept(timeoutSeconds: 10)
            defer { stream.close() }
            var encoder = FrameEncoder()
            let hello = Hello(version: ProtocolVersion.v2.rawValue, sessionID: [UInt8](repeating: 7, count: 16), role: .destination, encodings: destinationEncodings,
                              devices: [DeviceDescriptor(name: "gpu0", pageSize: 4096, compatibility: "sim/v1 state=\(512 << 10)")],
                              memory: [MemoryRange(startPFN: 0, pageCount: 256, pageSize: 4096)])
            try stream.write(try encoder.encode(.hello(hello)))
            var decoder = FrameDecoder(peer: .source, version: .v2)
            var seen = Seen()
            try readSourceFrames(stream, &decoder) { frame, _ in
                switch frame.body {
                case .hello(let h): seen.hello = h.encodings
                case .deviceData(let d): seen.payloads.insert("\(d.encoding)")
                case .pages(let p): for s in p.segments { seen.payloads.insert("\(s.encoding)") }
                case .complete: return true
                default: break
                }
                return false
            }
            return seen
        }
        var options = Loopback.quickOptions()
        options.compression = policy
        options.readyTimeoutSeconds = 0.5
        let stream = try TLSConnector.connect(to: listener.boundEndpoint, context: client, timeoutSeconds: 10)
        #expect(throws: MigrationError.self) { try Sender(devices: pair.source, memory: pair.sourceMemory, options: options).run(stream: stream) }
        return try recorded.join()
    }

    @Test func bothListZstdSoZstdIsUsed() throws {
        let seen = try recordSource(policy: .zstd(level: 3), destinationEncodings: [.raw, .deflate, .zstd])
        #expect(seen.hello == [.raw, .deflate, .zstd])
        #expect(seen.payloads.contains("zstd") && !seen.payloads.contains("deflate"), "\(seen.payloads)")
    }

    /// A destination without zstd (an older one): the source neither lists nor uses it, and deflates.
    @Test func aDestinationWithoutZstdGetsDeflate() throws {
        for policy in [CompressionPolicy.zstd(level: 3), .auto] {
            let seen = try recordSource(policy: policy, destinationEncodings: [.raw, .deflate])
            #expect(seen.hello == [.raw, .deflate])
            #expect(!seen.payloads.contains("zstd"), "\(policy): \(seen.payloads)")
        }
        #expect(try recordSource(policy: .zstd(level: 3), destinationEncodings: [.raw, .deflate]).payloads.contains("deflate"))
    }

    /// A source that does not use zstd (zlib:N here) leaves it out even when offered.
    @Test func aSourceWithoutZstdLeavesItOut() throws {
        let seen = try recordSource(policy: .zlib(level: 1), destinationEncodings: [.raw, .deflate, .zstd])
        #expect(seen.hello == [.raw, .deflate])
        #expect(seen.payloads.isSubset(of: ["zero", "raw", "deflate"]), "\(seen.payloads)")
    }

    /// A version-1 session (no ALPN: `--reconnect-timeout 0`, or a peer built before
    /// version 2): the destination leaves zstd out of its HELLO, which a version-1 HELLO
    /// must not list, and a zstd policy deflates.
    @Test func aVersionOneSessionMigratesWithoutZstd() throws {
        let pair = try SimPair(memoryPages: 512)
        var options = Loopback.quickOptions()
        options.compression = .zstd(level: 1)
        let outcome = try Loopback.migrate(source: pair.source, sourceMemory: pair.sourceMemory,
                                           destination: pair.destination, destinationMemory: pair.destinationMemory,
                                           options: options, version: .v1)
        _ = try outcome.source.get()
        _ = try outcome.destination.get()
        #expect(pair.sourceSims[0].stateSnapshot() == pair.destinationSims[0].stateSnapshot())
        #expect(try pair.identicalMemory())
    }

    /// Real peers both ways round: every pairing migrates byte for byte.
    @Test(arguments: [("zstd:1", true), ("zstd:-5", true), ("zstd:3", false), ("auto", true), ("auto", false)])
    func migratesWithAndWithoutZstdAtTheDestination(policy: String, destinationHasZstd: Bool) throws {
        let pair = try SimPair(memoryPages: 1024)
        var options = Loopback.quickOptions()
        options.compression = try CompressionPolicy(parsing: policy)
        var receiver = Loopback.quickReceiver()
        if !destinationHasZstd { receiver.encodings = [.raw, .deflate] }
        let events = EventLog()
        let outcome = try Loopback.migrate(source: pair.source, sourceMemory: pair.sourceMemory,
                                           destination: pair.destination, destinationMemory: pair.destinationMemory,
                                           options: options, receiverOptions: receiver, events: events.sink, version: .v2)
        _ = try outcome.source.get()
        _ = try outcome.destination.get()
        #expect(pair.sourceSims[0].stateSnapshot() == pair.destinationSims[0].stateSnapshot())
        #expect(try pair.identicalMemory())
        // `auto` reports its choice and why in progress events; fixed policies do not.
        let reports = events.all.compactMap { if case .progress(let p) = $0 { p.encoding } else { nil } }
        if policy == "auto" {
            #expect(!reports.isEmpty)
            #expect(reports.allSatisfy { !$0.reason.isEmpty && $0.batches.values.reduce(0, +) > 0 })
            #expect(reports.allSatisfy { $0.choice == "raw" || $0.choice.hasPrefix(destinationHasZstd ? "zstd:" : "deflate:") }, "\(reports.map(\.choice))")
        } else {
            #expect(reports.isEmpty)
        }
    }
}
