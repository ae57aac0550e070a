import Foundation
import Testing
@testable import MigrationEngine
import MigrationTLS
import MigrationWire
import TestSupport

/// Version 6 (PROTOCOL.md §17.1): a session speaks it only when the source offers it and
/// the destination selects it, each by default and not with `--no-page-copies`; a side
/// without it gets the session it had before, and the source then sends no copy.
@Suite(.serialized)
struct PageCopyNegotiationTests {
    static func sides(source copies: Bool, digest: DeviceDigestAlgorithm = .xxh3,
                      destination destinationCopies: Bool) -> (SenderOptions, ReceiverOptions) {
        var options = Loopback.quickOptions()
        options.pageCopies = copies
        options.deviceDigest = digest
        var receiver = Loopback.quickReceiver()
        receiver.pageCopies = destinationCopies
        return (options, receiver)
    }

    /// The protocol the two offers agree on, from a TLS handshake over 127.0.0.1.
    static func selected(_ alpn: (server: [String], client: [String])) throws -> (source: String?, destination: String?) {
        let (server, client) = try Loopback.contexts(alpn: alpn)
        let listener = try TLSListener(endpoint: .tcp(host: "127.0.0.1", port: 0), context: server)
        defer { listener.close() }
        let accepted = background { () throws -> String? in
            let stream = try listener.accept(timeoutSeconds: 10)
            defer { stream.close() }
            return stream.applicationProtocol
        }
        let stream = try TLSConnector.connect(to: listener.boundEndpoint, context: client, timeoutSeconds: 10)
        defer { stream.close() }
        return (stream.applicationProtocol, try accepted.join())
    }

    /// Each pairing: the ALPN offers, the version selected (6 only when both want page
    /// copies; a source with SHA-256 still gets 6, as version 6 does not need encoding 4),
    /// then a whole migration with those offers, byte-exact. (`Loopback` does not resume,
    /// so its sessions send no copy even at version 6: copies between two engines are in
    /// ReliabilityTests' PageCopyConformanceTests, and `recordSource` below.)
    @Test(arguments: [(true, DeviceDigestAlgorithm.xxh3, true, 6), (true, .xxh3, false, 5), (false, .xxh3, true, 5),
                      (false, .xxh3, false, 5), (true, .sha256, true, 6), (true, .sha256, false, 4)])
    func versionSixOnlyWhenBothSidesWantCopies(_ sourceCopies: Bool, _ digest: DeviceDigestAlgorithm, _ destinationCopies: Bool,
                                               _ expected: UInt16) throws {
        let (options, receiver) = Self.sides(source: sourceCopies, digest: digest, destination: destinationCopies)
        let six = ProtocolVersion.v6.alpnIdentifier
        #expect(options.applicationProtocols.contains(six) == sourceCopies, "\(options.applicationProtocols)")
        #expect(receiver.applicationProtocols.contains(six) == destinationCopies, "\(receiver.applicationProtocols)")
        #expect(options.helloEncodings.contains(.pageCopies) == sourceCopies && receiver.helloEncodings.contains(.pageCopies) == destinationCopies)
        let alpn = (server: receiver.applicationProtocols, client: options.applicationProtocols)
        let agreed = try Self.selected(alpn)
        #expect(agreed.source == "vfio-migrate/\(expected)" && agreed.destination == agreed.source, "\(agreed)")

        let pair = try SimPair(memoryPages: 768)
        let outcome = try Loopback.migrate(source: pair.source, sourceMemory: pair.sourceMemory,
                                           destination: pair.destination, destinationMemory: pair.destinationMemory,
                                           options: options, receiverOptions: receiver, alpn: alpn)
        let stats = try [outcome.source.get(), outcome.destination.get()]
        #expect(stats.allSatisfy { $0.devices.allSatisfy { $0.digestAlgorithm == (expected >= 5 && digest == .xxh3 ? "xxh3-128" : "sha256") } },
                "\(stats.map { $0.devices.map(\.digestAlgorithm) })")
        #expect(pair.sourceSims[0].stateSnapshot() == pair.destinationSims[0].stateSnapshot())
        #expect(try pair.identicalMemory())
    }

    /// What a source put on the wire to a destination written here, which applies every
    /// PAGES segment (copies too) to its own copy of guest memory.
    struct Recorded: Sendable {
        var hello: [Encoding] = []
        var copySegments = 0
        var copiedPages = 0
        var memory: [UInt8] = []
    }

    /// A destination of `version` that lists `encodings`, decodes and applies what the
    /// source sends up to COMPLETE, acknowledges each frame at once (a copy may only name
    /// acknowledged pages), and never answers READY: the source rolls back.
    func recordSource(pair: SimPair, version: ProtocolVersion, encodings: [Encoding]) throws -> Recorded {
        let (server, client) = try Loopback.contexts(version: version)
        let listener = try TLSListener(endpoint: .tcp(host: "127.0.0.1", port: 0), context: server)
        defer { listener.close() }
        let pages = Int(pair.sourceMemory.pageCount)
        let hello = Hello(version: version.rawValue, sessionID: [UInt8](repeating: 9, count: 16), role: .destination, encodings: encodings,
                          devices: [DeviceDescriptor(name: "gpu0", pageSize: 4096, compatibility: "sim/v1 state=\(512 << 10)")],
                          memory: [MemoryRange(startPFN: 0, pageCount: UInt64(pages), pageSize: 4096)],
                          streams: StreamOffer(count: 1, blockPages: 0))
        let recorded = background { () throws -> Recorded in
            let stream = try listener.accept(timeoutSeconds: 10)
            listener.close()  // the source's reconnection, once this stream closes, is refused at once
            defer { stream.close() }
            var encoder = FrameEncoder()
            try stream.write(try encoder.encode(.hello(hello)))
            var decoder = FrameDecoder(peer: .source, version: version)
            var seen = Recorded(memory: [UInt8](repeating: 0, count: pages * 4096))
            let decompressor = try PayloadDecompressor()
            try readSourceFrames(stream, &decoder) { frame, position in
                switch frame.body {
                case .hello(let h): seen.hello = h.encodings
                case .pages(let p): try Self.apply(p, to: &seen, decompressor: decompressor)
                case .complete: return true
                default: break
                }
                try stream.write(try encoder.encode(.ack(position)))
                return false
            }
            return seen
        }
        var options = Loopback.quickOptions()
        options.readyTimeoutSeconds = 0.5
        options.reconnectTimeoutSeconds = 1
        // Raw frames of 64 pages and the smallest resume window (1 MiB + the largest frame):
        // a batch is encoded only once the writer took the one 12 batches before it (the
        // pipeline's window), and that one was written only once the window freed, i.e.
        // frames ~14 further back were acknowledged. So from batch ~26 on, every batch
        // sees the pages of older batches as acknowledged, whatever the timing.
        options.compression = .none
        options.pagesPerFrame = 64
        options.limits = WireLimits(maxPayload: 512 << 10)
        options.resumeWindowBytes = options.minimumResumeWindowBytes
        // Page copies need a resuming session (its ACKs say what the destination holds):
        // a way to reconnect, which fails once the recorder is gone.
        let endpoint = listener.boundEndpoint
        let reconnect: Reconnect = { () throws(TLSError) -> TLSStream in try TLSConnector.connect(to: endpoint, context: client, timeoutSeconds: 1) }
        let stream = try reconnect()
        #expect(throws: MigrationError.self) { try Sender(devices: pair.source, memory: pair.sourceMemory, options: options).run(stream: stream, reconnect: reconnect) }
        return try recorded.join()
    }

    /// Segments in order, a copy reading what the memory holds at that moment (§17).
    static func apply(_ p: Pages, to seen: inout Recorded, decompressor: PayloadDecompressor) throws {
        let size = Int(p.pageSize)
        for s in p.segments {
            let start = Int(s.startPFN) * size, bytes = Int(s.pageCount) * size
            if let source = s.copySourcePFN {
                seen.copySegments += 1
                seen.copiedPages += Int(s.pageCount)
                let from = Int(source) * size
                let copied = Array(seen.memory[from..<(from + bytes)])  // not a slice of the buffer it writes (a 12 MiB copy-on-write)
                seen.memory.replaceSubrange(start..<(start + bytes), with: copied)
            } else {
                seen.memory.replaceSubrange(start..<(start + bytes), with: try decompressor.decode(s, pageSize: size))
            }
        }
    }

    /// Against a version-6 destination listing encoding 5 the source lists it too, sends
    /// copies, and every copy is right: the recorded memory equals the guest's byte for
    /// byte. Against a version-5 destination (`--no-page-copies`) it lists no 5 and sends
    /// no copy.
    @Test(arguments: [true, false])
    func theSourceCopiesOnlyWhenTheDestinationListsCopies(_ listed: Bool) throws {
        // Every third page written, with equal bytes every 768 pages (12 batches): pages
        // from ~PFN 1700 + 768 on have an equal page acknowledged before their batch.
        let pair = try SimPair(memoryPages: 6144)
        let encodings: [Encoding] = [.raw, .deflate, .zstd, .xxh3Digest] + (listed ? [.pageCopies] : [])
        let seen = try recordSource(pair: pair, version: listed ? .v6 : .v5, encodings: encodings)
        #expect(seen.hello.contains(.pageCopies) == listed, "\(seen.hello)")
        if listed {
            #expect(seen.copiedPages >= (6144 - 2500) / 3, "copies from PFN ~2500 on: \(seen.copiedPages) pages")
        } else {
            #expect(seen.copySegments == 0)
        }
        let guest = try pair.sourceMemory.readPages(startPFN: 0, count: Int(pair.sourceMemory.pageCount))
        #expect(seen.memory.count == guest.count)
        // By page: a 12 MiB array would not print usefully.
        let differing = stride(from: 0, to: min(guest.count, seen.memory.count), by: 4096).first { seen.memory[$0..<($0 + 4096)] != guest[$0..<($0 + 4096)] }
        #expect(differing == nil, "page \(differing.map { $0 / 4096 } ?? 0) differs from the guest (\(seen.copySegments) copy segments)")
        print("page copies: \(listed ? "version 6" : "version 5"): \(seen.copySegments) copy segments, \(seen.copiedPages) pages")
    }
}
