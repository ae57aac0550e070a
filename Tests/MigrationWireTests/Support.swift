@testable import MigrationWire

/// SplitMix64: tiny, deterministic, good enough to drive generators; a failing
/// case is reproduced from its seed.
struct SeededRNG: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8.random(in: 0...255, using: &self) } }
    mutating func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &self) < p }
}

let testSessionID: [UInt8] = Array(0x10...0x1f)

/// 1024 × 4 KiB pages at PFN 0, and 16 × 2 MiB pages at PFN 0x100000.
let testMemory = [
    MemoryRange(startPFN: 0, pageCount: 1024, pageSize: 4096),
    MemoryRange(startPFN: 0x10_0000, pageCount: 16, pageSize: 2 << 20),
]

/// Version 3: the source opens 2 streams with blocks of 512 pages (stream 1 owns PFNs
/// 512..<1024, 1536..<2048, …); the destination accepts 8.
let testRouting = StreamRouting(count: 2, blockPages: 512)

/// `lanes`: version 4's zstd lanes per stream (§15) in the stream tail.
func testHello(role: Role = .source, devices: Int = 2, memory: [MemoryRange] = testMemory,
               encodings: [Encoding] = [.raw, .deflate], version: ProtocolVersion = .v1, lanes: UInt16 = 0) -> Hello {
    let streams = version < .v3 ? nil : role == .source ? StreamOffer(count: 2, blockPages: 512, lanes: lanes) : StreamOffer(count: 8, blockPages: 0, lanes: lanes)
    return Hello(version: version.rawValue, sessionID: testSessionID, role: role, encodings: encodings,
                 devices: (0..<devices).map { DeviceDescriptor(name: "dev\($0)", pageSize: 4096, compatibility: "vendor:model:rev\($0)") },
                 memory: memory, streams: streams)
}

/// Builds one direction of a session with a real encoder.
struct StreamBuilder {
    var encoder = FrameEncoder()
    var bytes: [UInt8] = []
    var frames: [Frame] = []
    /// Byte offset of each frame's header, for mutations that target fields.
    var offsets: [Int] = []

    static func source(devices: Int = 2, memory: [MemoryRange] = testMemory, encodings: [Encoding] = [.raw, .deflate],
                       version: ProtocolVersion = .v1, lanes: UInt16 = 0) -> StreamBuilder {
        var s = StreamBuilder()
        s.add(.hello(testHello(role: .source, devices: devices, memory: memory, encodings: encodings, version: version, lanes: lanes)))
        return s
    }

    static func destination(devices: Int = 2, version: ProtocolVersion = .v1) -> StreamBuilder {
        var s = StreamBuilder()
        s.add(.hello(testHello(role: .destination, devices: devices, version: version)))
        return s
    }

    /// A version-2 frame (ACK numbered; handshake frames unnumbered, not in `frames`).
    mutating func add(_ body: ResumptionBody) {
        offsets.append(bytes.count)
        do { bytes += try encoder.encode(body) } catch { fatalError("test frame cannot be encoded: \(error)") }
    }

    mutating func add(_ body: FrameBody, device: UInt32 = 0) {
        offsets.append(bytes.count)
        frames.append(Frame(device: device, sequence: encoder.nextSequence, body: body))
        do { bytes += try encoder.encode(body, device: device) } catch { fatalError("test frame cannot be encoded: \(error)") }
    }

    /// Every device ended, then COMPLETE.
    mutating func finishDevices(_ count: Int) {
        for d in 0..<count { add(.deviceEnd(DeviceEnd(totalBytes: 0, chunkCount: 0, sha256: [UInt8](repeating: 0, count: 32))), device: UInt32(d)) }
        add(.complete)
    }
}

/// A frame built by hand (header fields and payload as given), for malformed input.
func rawFrame(type: UInt16, flags: UInt16 = 0, device: UInt32 = 0, sequence: UInt64, payload: [UInt8], length: UInt32? = nil) -> [UInt8] {
    var w = ByteWriter()
    w.append(FrameHeader.magic)
    w.u16(type); w.u16(flags); w.u32(device); w.u32(length ?? UInt32(payload.count)); w.u64(sequence)
    w.append(payload)
    return w.bytes
}

/// The payload bytes our encoder produces for a body (to patch, then wrap with rawFrame).
func payloadBytes(_ body: FrameBody) -> [UInt8] {
    Array(FrameEncoder.serialize(body, device: 0, sequence: 0).dropFirst(FrameHeader.size))
}

func payloadBytes(_ body: ResumptionBody) -> [UInt8] {
    do { return Array(try FrameEncoder.frame(body, sequence: 0).dropFirst(FrameHeader.size)) } catch { fatalError("\(error)") }
}

/// Decodes a whole stream: every frame, then the end-of-stream truncation check.
func decodeAll(_ bytes: [UInt8], peer: Role = .source, limits: WireLimits = .default,
               configure: (inout FrameDecoder) -> Void = { _ in }) throws -> [Frame] {
    var decoder = FrameDecoder(peer: peer, limits: limits)
    configure(&decoder)
    decoder.feed(bytes)
    var frames: [Frame] = []
    while let frame = try decoder.next() { frames.append(frame) }
    try decoder.finish()
    return frames
}

/// Mixed guest-memory-like content: zero pages, text-like pages, random pages.
func mixedPages(pages: Int, pageSize: Int = 4096, rng: inout SeededRNG) -> [UInt8] {
    let words = ["vfio", "migration", "region", "pending_bytes", "data_offset", "guest", "page ", "\n", "0000", "kernel"]
    var out: [UInt8] = []
    out.reserveCapacity(pages * pageSize)
    for _ in 0..<pages {
        switch Int.random(in: 0..<3, using: &rng) {
        case 0: out += [UInt8](repeating: 0, count: pageSize)
        case 1:
            var page: [UInt8] = []
            while page.count < pageSize { page += Array(words.randomElement(using: &rng)!.utf8) }
            out += page[0..<pageSize]
        default: out += rng.bytes(pageSize)
        }
    }
    return out
}

func textBytes(_ count: Int) -> [UInt8] {
    let line = Array("The quick brown fox jumps over the lazy dog; pending_bytes=0x1000 data_offset=0x2000\n".utf8)
    var out: [UInt8] = []
    var i = 0
    while out.count < count { out.append(line[i % line.count] ^ UInt8(i / line.count % 3)); i += 1 }
    return out
}

extension FrameEncoder {
    /// One frame with an explicit sequence number (tests build bad streams with it).
    /// Test frames are small: a payload the header cannot describe is a test bug.
    static func serialize(_ body: FrameBody, device: UInt32, sequence: UInt64) -> [UInt8] {
        do { return try frame(body, device: device, sequence: sequence) } catch {
            fatalError("test frame cannot be encoded: \(error)")
        }
    }
}

/// Decodes a whole version-2 stream into messages (frames and ACKs).
func decodeMessages(_ bytes: [UInt8], peer: Role, limits: WireLimits = .default,
                    configure: (inout FrameDecoder) -> Void = { _ in }) throws -> [WireMessage] {
    var decoder = FrameDecoder(peer: peer, limits: limits, version: .v2)
    configure(&decoder)
    decoder.feed(bytes)
    var messages: [WireMessage] = []
    while let m = try decoder.nextMessage() { messages.append(m) }
    try decoder.finish()
    return messages
}
