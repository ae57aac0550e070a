import MigrationWire
import VFIODevice

/// The HELLO exchange (docs/PROTOCOL.md §2.3, §5.1), the same checks on both ends:
/// the destination speaks first; each side checks the other's HELLO before any
/// device moves, and a mismatch is named in words.
struct HelloExchange: Sendable {
    let devices: [DeviceDescriptor]
    let memory: [MemoryRange]

    init(names: [String], compatibility: [String], memory: GuestMemory?) {
        let pageSize = UInt32(memory?.pageSize ?? 4096)
        devices = zip(names, compatibility).map { DeviceDescriptor(name: $0, pageSize: pageSize, compatibility: $1) }
        if let memory, memory.pageCount > 0 {
            self.memory = [MemoryRange(startPFN: 0, pageCount: memory.pageCount, pageSize: UInt32(memory.pageSize))]
        } else {
            self.memory = []
        }
    }

    /// Source: reads the destination's HELLO and answers with its own once it is compatible.
    /// Of `encodings` it lists the optional ones (zstd) only if the destination does.
    /// Version 3: it opens `streams` streams, at most what the destination accepts, and
    /// routes pages in blocks of `blockPages` (§14.2). Returns both HELLOs.
    /// Version 4: it uses up to `lanes` zstd lanes in the session, at most what the
    /// destination decodes, when both use zstd (§15.2).
    /// Version 5: it lists the XXH3-128 digest when `encodings` and the destination do (§16.2).
    func asSource(reader: FrameReader, writer: FrameWriter, encodings: [Encoding], version: ProtocolVersion = .v1,
                  streams: Int = 1, blockPages: Int = 1, lanes: Int = 0) throws(MigrationFailure) -> (theirs: Hello, mine: Hello) {
        let theirs = try Self.receiveHello(reader)
        // The optional entries (zstd, the XXH3-128 digest) only if the destination listed them.
        var usable = encodings.filter { e in e.introduced <= version && (e.introduced == .v1 || theirs.encodings.contains(e)) && e != .zstdLanes }
        var mine = Hello(sessionID: theirs.sessionID, role: .source, encodings: usable, devices: devices, memory: memory)
        mine.version = version.rawValue
        if version >= .v3 {
            let count = max(1, min(streams, Int(theirs.streams?.count ?? 1)))
            mine.streams = StreamOffer(count: UInt16(count), blockPages: UInt32(clamping: max(blockPages, 1)))
        }
        if version >= .v4, usable.contains(.zstd), theirs.encodings.contains(.zstdLanes) {
            let count = max(0, min(lanes, Int(theirs.streams?.lanes ?? 0), Int(StreamOffer.maxLanes)))
            if count > 0 {
                usable.append(.zstdLanes)
                mine.encodings = usable
                mine.streams?.lanes = UInt16(count)
            }
        }
        if let reason = Self.mismatch(source: mine, destination: theirs) { throw .incompatible(reason) }
        try writer.send(.hello(mine))
        reader.constrainInbound(memory: [], deviceCount: devices.count)
        return (theirs, mine)
    }

    /// Destination: speaks first with a fresh session id; returns the source's HELLO once
    /// it is compatible.
    /// Version 3: it accepts up to `maxStreams` streams (§14.2).
    /// Version 4: it decodes up to `maxLanes` zstd lanes in the session (§15.2).
    func asDestination(reader: FrameReader, writer: FrameWriter, encodings: [Encoding], version: ProtocolVersion = .v1,
                       maxStreams: Int = 1, maxLanes: Int = 0) throws(MigrationFailure) -> Hello {
        let mine = destinationHello(encodings: encodings, version: version, maxStreams: maxStreams, maxLanes: maxLanes)
        try writer.send(.hello(mine))
        let theirs = try Self.receiveHello(reader)
        if let reason = Self.mismatch(source: theirs, destination: mine) { throw .incompatible(reason) }
        // PFNs are checked against what the source announced (it lies inside ours).
        reader.constrainInbound(memory: theirs.memory, deviceCount: devices.count)
        return theirs
    }

    /// The destination's HELLO of a `version` session with a fresh session id; an
    /// encoding a later version introduced (zstd) is never listed (§10).
    /// Version 4: lanes (and their encoding) only with zstd listed.
    func destinationHello(encodings: [Encoding], version: ProtocolVersion, maxStreams: Int = 1, maxLanes: Int = 0) -> Hello {
        let sessionID = (0..<16).map { _ in UInt8.random(in: 0...255) }
        var streams = version >= .v3 ? StreamOffer(count: UInt16(clamping: max(maxStreams, 1)), blockPages: 0) : nil
        var listed = encodings.filter { $0.introduced <= version && $0 != .zstdLanes }
        if version >= .v4, listed.contains(.zstd), maxLanes > 0 {
            streams?.lanes = UInt16(min(maxLanes, Int(StreamOffer.maxLanes)))
            listed.append(.zstdLanes)
        }
        return Hello(version: version.rawValue, sessionID: sessionID, role: .destination,
                     encodings: listed, devices: devices, memory: memory, streams: streams)
    }

    private static func receiveHello(_ reader: FrameReader) throws(MigrationFailure) -> Hello {
        let frame = try reader.receive()
        switch frame.body {
        case .hello(let hello): return hello
        case .abort(let a): throw .peerAborted(a.reason, a.message)
        default: throw .unexpectedFrame("expected HELLO, got \(frame.body.name)")
        }
    }

    /// nil when compatible, else the reason in words. The checks of docs/PROTOCOL.md §5.1,
    /// made by both ends: a failed one is answered with ABORT `incompatible`.
    static func mismatch(source: Hello, destination: Hello) -> String? {
        if source.version != destination.version {
            return "protocol version \(source.version) on the source, \(destination.version) on the destination"
        }
        if source.sessionID != destination.sessionID {
            return "the source's HELLO carries another session id than the destination chose"
        }
        if source.devices.count != destination.devices.count {
            return "the source migrates \(source.devices.count) device(s) (\(source.devices.map(\.name).joined(separator: ", "))), the destination has \(destination.devices.count) (\(destination.devices.map(\.name).joined(separator: ", ")))"
        }
        for (s, d) in zip(source.devices, destination.devices) {
            if s.name != d.name { return "device name \(s.name) on the source, \(d.name) on the destination" }
            if s.pageSize != d.pageSize { return "device \(s.name): page size \(s.pageSize) on the source, \(d.pageSize) on the destination" }
            if s.compatibility != d.compatibility {
                return "device \(s.name): compatibility \"\(s.compatibility)\" on the source, \"\(d.compatibility)\" on the destination"
            }
        }
        if let outside = source.memory.first(where: { !lies($0, inside: destination.memory) }) {
            return "guest memory: \(describe([outside])) on the source is not inside the destination's \(describe(destination.memory))"
        }
        if let mine = source.streams, let theirs = destination.streams, mine.count > theirs.count {
            return "the source opens \(mine.count) streams, the destination accepts at most \(theirs.count)"
        }
        if let mine = source.streams, mine.lanes > (destination.streams?.lanes ?? 0) {
            return "the source uses \(mine.lanes) zstd lanes, the destination decodes at most \(destination.streams?.lanes ?? 0)"
        }
        // §15.2: encoding 3 and L ≥ 1 go together, so a source cannot announce lanes it
        // may not use (or the reverse) and fail only at its first lane segment.
        let lanes = source.streams?.lanes ?? 0
        if lanes > 0, !source.encodings.contains(.zstdLanes) {
            return "the source uses \(lanes) zstd lanes but does not list encoding 3 (zstdLanes)"
        }
        if lanes == 0, source.encodings.contains(.zstdLanes) {
            return "the source lists encoding 3 (zstdLanes) with no lanes (L = 0)"
        }
        // raw is always permitted, listed or not (§5.1).
        if let e = source.encodings.first(where: { $0 != .raw && !destination.encodings.contains($0) }) {
            return "the source wants encoding \(e), which the destination does not accept"
        }
        return nil
    }

    /// Whether `range` is covered by `ranges` of the same page size (adjacent ones may
    /// cover it together): the source may send less memory than the destination has.
    static func lies(_ range: MemoryRange, inside ranges: [MemoryRange]) -> Bool {
        var pfn = range.startPFN
        let end = range.startPFN + range.pageCount
        while pfn < end {
            guard let cover = ranges.first(where: { $0.pageSize == range.pageSize && pfn >= $0.startPFN && pfn - $0.startPFN < $0.pageCount }) else {
                return false
            }
            pfn = cover.startPFN + cover.pageCount
        }
        return true
    }

    private static func describe(_ r: [MemoryRange]) -> String {
        r.isEmpty ? "none" : r.map { "\($0.pageCount) pages of \($0.pageSize) bytes at PFN \($0.startPFN)" }.joined(separator: ", ")
    }
}
