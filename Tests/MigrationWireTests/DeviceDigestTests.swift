import Foundation
import Testing
@testable import MigrationWire

/// DEVICE_END's digest field (PROTOCOL.md §5.6, §16): SHA-256, or XXH3-128 in its
/// canonical form and 16 zero bytes, the same however the stream is cut into chunks.
@Suite struct DeviceDigestTests {
    static func hexString(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    /// Published XXH3-128 values (xxhsum -H2; the empty input's is in xxHash's own
    /// tests), high half first.
    @Test(arguments: [
        ("", "99aa06d3014798d86001c324468d497f"),
        ("abc", "06b05ab6733a618578af5f94892f3950"),
    ])
    func xxh3FieldIsTheCanonicalHashThenZeroes(text: String, canonical: String) {
        let field = DeviceDigest.field(Array(text.utf8), .xxh3)
        #expect(field.count == DeviceEnd.digestSize)
        #expect(Self.hexString(Array(field[0..<16])) == canonical)
        #expect(field[16...].allSatisfy { $0 == 0 })
    }

    @Test func sha256FieldIsSHA256() {
        #expect(Self.hexString(DeviceDigest.field(Array("abc".utf8), .sha256))
                == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    /// One MiB in chunks of every awkward size: the same field as in one piece, and
    /// `finalize` starts over for the next stream.
    @Test(arguments: DeviceDigestAlgorithm.allCases)
    func chunkingDoesNotChangeTheField(algorithm: DeviceDigestAlgorithm) {
        let bytes = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 / 4096) }
        let whole = DeviceDigest.field(bytes, algorithm)
        if algorithm == .xxh3 { #expect(Self.hexString(Array(whole[0..<16])) == "6b43aef42d67c53767b4ba4fa33ac37c") }
        let digest = DeviceDigest(algorithm)
        for round in 0..<2 {
            var offset = 0, step = 1
            while offset < bytes.count {
                let end = min(bytes.count, offset + step)
                digest.update(bytes[offset..<end])
                offset = end
                step = step * 3 + 1
            }
            #expect(digest.finalize() == whole, "round \(round)")
        }
        #expect(DeviceDigest.field(bytes.dropLast().map { $0 }, algorithm) != whole)
    }

    /// Encoding 4 is listed by HELLOs from version 5 on; it decides the algorithm.
    @Test func theSessionsEncodingsNameTheAlgorithm() {
        #expect(Encoding.xxh3Digest.rawValue == 4 && Encoding.xxh3Digest.introduced == .v5)
        #expect(DeviceDigestAlgorithm(sessionEncodings: [.raw, .deflate, .xxh3Digest]) == .xxh3)
        #expect(DeviceDigestAlgorithm(sessionEncodings: [.raw, .deflate, .zstd]) == .sha256)
        #expect(!Encoding.xxh3Digest.carriesDeviceData && !Encoding.zstdLanes.carriesDeviceData && Encoding.zstd.carriesDeviceData)
        #expect(ProtocolVersion.v5.alpnIdentifier == "vfio-migrate/5" && ProtocolVersion.latest >= .v5)
    }

    // MARK: - the wire (§16.2)

    /// A version-5 HELLO lists encoding 4 (both roles); a version-4 one may not.
    @Test func onlyAVersion5HelloListsTheDigest() throws {
        for role in [Role.source, .destination] {
            let hello = testHello(role: role, encodings: [.raw, .deflate, .zstd, .zstdLanes, .xxh3Digest], version: .v5, lanes: 2)
            var s = StreamBuilder()
            s.add(.hello(hello))
            #expect(try ZstdLaneTests.decodeAll(s.bytes, peer: role, version: .v5).first?.body == .hello(hello))
        }
        var old = StreamBuilder()
        old.add(.hello(testHello(role: .source, encodings: [.raw, .xxh3Digest], version: .v4)))
        #expect(throws: WireError.unknownEncoding(frame: .hello, value: 4)) { try ZstdLaneTests.decodeAll(old.bytes, version: .v4) }
    }

    @Test func deviceDataNeverUsesEncoding4() throws {
        var s = StreamBuilder.source(encodings: [.raw, .deflate, .xxh3Digest], version: .v5)
        s.add(.deviceData(DeviceData(phase: .precopy, encoding: .xxh3Digest, originalLength: 4, payload: [1, 2, 3, 4])), device: 0)
        #expect(throws: DeviceData.refused(.xxh3Digest)) { try ZstdLaneTests.decodeAll(s.bytes, version: .v5) }
        #expect(throws: DeviceData.refused(.xxh3Digest)) {
            try PayloadDecompressor().decode(DeviceData(phase: .precopy, encoding: .xxh3Digest, originalLength: 4, payload: [1, 2, 3, 4]))
        }
    }
}
