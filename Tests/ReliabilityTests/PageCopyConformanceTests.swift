import Foundation
import Testing
import TestSupport
import MigrationEngine
import MigrationTLS
import MigrationWire
import VFIODevice

/// Version 6 (docs/PROTOCOL.md §17) against a source written by hand: the destination
/// lists encoding 5, applies copy segments in stream order from the bytes it holds then
/// (pages sent earlier, earlier segments of the same frame, or its own bytes for a page
/// never sent), and refuses a copy that breaks a rule with ABORT before READY.
@Suite(.serialized)
struct PageCopyConformanceTests {
    static let pageSize = 4096
    static let pageCount = 64

    /// A page of `byte`, with its first bytes marking `tag` so no two test pages are alike.
    static func page(_ byte: UInt8, tag: UInt8 = 0) -> [UInt8] {
        var p = [UInt8](repeating: byte, count: pageSize)
        p[0] = tag; p[pageSize - 1] = ~byte
        return p
    }

    static func pair() throws -> SimPair { try SimPair(names: ["gpu0"], stateSize: 32 << 10, memoryPages: UInt64(pageCount), maxChunk: 8 << 10) }

    /// A version-6 session by hand: the destination's HELLO read, the source's sent
    /// listing `encodings`, one stream.
    static func session(_ pair: SimPair, encodings: [Encoding]) throws -> (ScriptedSession, Hello) {
        var session = try ScriptedSession(pair, version: .v6)
        let offered = session.hello
        session.hello.encodings = encodings
        session.hello.streams = StreamOffer(count: 1, blockPages: 256)
        try session.peer.send(.hello(session.hello))
        return (session, offered)
    }

    /// What the destination's memory must hold: the same segments applied in order to a
    /// plain array of pages, copies read at the moment they are applied.
    struct Model {
        var pages: [[UInt8]]
        init(_ memory: GuestMemory) throws {
            pages = try (0..<PageCopyConformanceTests.pageCount).map { try memory.readPages(startPFN: UInt64($0), count: 1) }
        }
        mutating func apply(_ segments: [PageSegment]) {
            for s in segments {
                for k in 0..<Int(s.pageCount) {
                    let pfn = Int(s.startPFN) + k
                    if let source = s.copySourcePFN { pages[pfn] = pages[Int(source) + k]; continue }
                    if s.encoding == .zero { pages[pfn] = [UInt8](repeating: 0, count: pageSize); continue }
                    precondition(s.encoding == .raw, "the model applies zero, raw and copy segments")
                    pages[pfn] = Array(s.payload[(s.payload.startIndex + k * pageSize)..<(s.payload.startIndex + (k + 1) * pageSize)])
                }
            }
        }
        var bytes: [UInt8] { pages.flatMap { $0 } }
    }

    static func raw(_ pfn: UInt64, _ pages: [UInt8]...) -> PageSegment {
        PageSegment(startPFN: pfn, pageCount: UInt32(pages.count), encoding: .raw, payload: pages.flatMap { $0 })
    }

    /// Raw pages, then copies of them (one of several pages, one chained on a copy of
    /// the same frame, one made before the page it names is overwritten), and a copy of
    /// a page the source never sent: the destination's own bytes. The session ends
    /// READY → COMMIT → RESUMED and the memory equals the model's byte for byte.
    @Test func copiesTakeTheBytesTheDestinationHoldsWhenApplied() throws {
        let pair = try Self.pair()
        try pair.destinationMemory.writePages(startPFN: 50, bytes: Self.page(0x5A, tag: 50))  // never sent by the source
        var model = try Model(pair.destinationMemory)
        let (session, offered) = try Self.session(pair, encodings: [.raw, .deflate, .pageCopies])
        defer { session.close() }
        #expect(offered.version == 6 && offered.encodings.contains(.pageCopies), "the destination lists encoding 5: \(offered.encodings)")
        let frames: [[PageSegment]] = [
            [Self.raw(1, Self.page(0xA1, tag: 1), Self.page(0xB2, tag: 2)), Self.raw(5, Self.page(0xC3, tag: 5))],
            [.copy(startPFN: 10, pageCount: 2, from: 1), .copy(startPFN: 20, pageCount: 1, from: 5),
             .copy(startPFN: 30, pageCount: 2, from: 10),   // the copy just made, in this frame
             .copy(startPFN: 60, pageCount: 1, from: 50)],  // the destination's own page
            [.copy(startPFN: 40, pageCount: 1, from: 1), Self.raw(1, Self.page(0xD4, tag: 1)),
             .copy(startPFN: 41, pageCount: 1, from: 1)],   // before and after PFN 1 changes
            // A page a copy wrote counts as written: a zero segment must clear it (the
            // destination skips pages it knows were never written).
            [PageSegment(startPFN: 11, pageCount: 1, encoding: .zero, payload: []), .copy(startPFN: 12, pageCount: 1, from: 11)],
        ]
        for segments in frames {
            try session.peer.send(.pages(Pages(pageSize: UInt32(Self.pageSize), segments: segments)))
            model.apply(segments)
        }
        try session.peer.sendDeviceStreams(pair)
        try session.peer.send(.complete)
        try session.peer.commitAfterReady()
        session.close()
        guard case .success = session.receiver.result.wait(timeout: 30) else { Issue.record("receiver: \(session.receiver.result.wait())"); return }
        let memory = try pair.destinationMemory.readPages(startPFN: 0, count: Self.pageCount)
        // Page by page (an array of 64 pages would print 256 KiB on failure).
        #expect(memory.count == model.bytes.count)
        #expect(Self.firstDifferentPage(memory, model.bytes) == nil, "guest memory differs from the model at this page")
        // The model is not trivially right: the copies landed where expected.
        #expect(model.pages[31] == Self.page(0xB2, tag: 2) && model.pages[11].allSatisfy { $0 == 0 } && model.pages[12].allSatisfy { $0 == 0 })
        #expect(model.pages[40] == Self.page(0xA1, tag: 1) && model.pages[41] == Self.page(0xD4, tag: 1) && model.pages[10] == Self.page(0xA1, tag: 1))
        #expect(model.pages[60] == Self.page(0x5A, tag: 50) && model.pages[20] == Self.page(0xC3, tag: 5))
        #expect(try pair.destination[0].device.readState() == .running)
    }

    static func firstDifferentPage(_ a: [UInt8], _ b: [UInt8]) -> Int? {
        zip(a, b).enumerated().first { $0.element.0 != $0.element.1 }.map { $0.offset / pageSize }
    }

    /// A copy the decoder refuses (§17): ABORT `protocolError` naming the rule, before
    /// READY; nothing of its frame applied (the raw page before it stays zero) and the
    /// destination's devices never ran.
    @Test(arguments: [("overlaps", [Encoding.raw, .deflate, .pageCopies], PageSegment.copy(startPFN: 10, pageCount: 4, from: 12), "overlap"),
                      ("outside memory", [.raw, .deflate, .pageCopies], .copy(startPFN: 10, pageCount: 2, from: 63), "outside the announced guest memory"),
                      ("not listed", [.raw, .deflate], .copy(startPFN: 10, pageCount: 1, from: 1), "did not announce")])
    func aCopyBreakingARuleIsAProtocolError(_ what: String, _ encodings: [Encoding], _ copy: PageSegment, _ named: String) throws {
        let pair = try Self.pair()
        let (session, _) = try Self.session(pair, encodings: encodings)
        defer { session.close() }
        try session.peer.send(.pages(Pages(pageSize: UInt32(Self.pageSize), segments: [Self.raw(1, Self.page(0xA1))])))
        try session.peer.send(.pages(Pages(pageSize: UInt32(Self.pageSize), segments: [Self.raw(7, Self.page(0xCD)), copy])))
        try session.peer.sendDeviceStreams(pair)
        try session.peer.send(.complete)
        DeviceDigestConformanceTests.readUntilAbort(session.peer)
        #expect(session.peer.abort?.reason == .protocolError, "\(what): \(String(describing: session.peer.abort))")
        #expect(session.peer.abort?.message.contains(named) == true, "\(what): \(String(describing: session.peer.abort))")
        #expect(!session.peer.received.contains { if case .ready = $0.body { true } else { false } }, "\(what): no READY")
        #expect(try pair.destinationMemory.readPages(startPFN: 7, count: 1).allSatisfy { $0 == 0 }, "\(what): nothing of the refused frame applied")
        #expect(try pair.destinationMemory.readPages(startPFN: 10, count: 1).allSatisfy { $0 == 0 })
        Guarantee.destinationNeverRan(pair)
        guard let e = session.receiver.error, case .wire = e.failure else { Issue.record("receiver: \(session.receiver.result.wait())"); return }
    }

    /// Version 6 between two engines, cut by the proxy mid-stream and resumed (§13.7,
    /// §17): raw frames of 64 pages and the smallest resume window make the source send
    /// copies whatever the timing (a batch is encoded only after frames ~29 batches back
    /// were acknowledged, and this guest repeats its pages every 256 PFNs), so frames with
    /// copies are in flight at the cut; the replay rebuilds or resends them, and the
    /// destination's memory and devices end byte-exact, SHA-256 digests verified.
    /// Against a destination with `--no-page-copies` (version 4 here: SHA-256 on both
    /// sides) the same source sends no copy: the destination's decoder would refuse one.
    /// (Measured with a counter in the applier, since removed: 1659 pages applied as
    /// copies without the cut, 896 with it.)
    @Test(arguments: [(Int?.none, true), (3 << 20, true), (nil, false)])
    func aSessionWithCopiesMigratesAndResumes(_ cutAfter: Int?, _ destinationCopies: Bool) throws {
        let pair = try SimPair(memoryPages: 4096)
        var options = ResumeRig.senderOptions()
        options.pageCopies = true  // the rig holds its sessions below version 6
        options.compression = .none
        options.limits = WireLimits(maxPayload: 512 << 10)
        options.resumeWindowBytes = options.minimumResumeWindowBytes
        var receiver = ResumeRig.receiverOptions()
        receiver.pageCopies = destinationCopies
        let run = try ResumeRig.migrate(pair, options: options, receiverOptions: receiver, cutFirstAfterRawBytes: cutAfter)
        try Guarantee.migrated(run.outcome, pair)
        if cutAfter != nil {
            #expect(run.events.source.contains("resumed") && run.proxy.cuts >= 1, "\(run.events)")
        }
        #expect(try run.outcome.destination.get().devices.allSatisfy { $0.digestAlgorithm == "sha256" })
    }
}
