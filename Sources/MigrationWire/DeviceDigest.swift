internal import CXXHash

/// What DEVICE_END's 32-byte digest field holds (PROTOCOL.md §5.6, §16): SHA-256, or
/// from version 5, when both HELLOs list encoding 4, XXH3-128 and 16 zero bytes.
///
/// TLS already authenticates every byte between the two ends; the digest is there to
/// catch a chunk lost, repeated or reordered by either implementation. XXH3-128 does
/// that at a small fraction of SHA-256's cost, which took about 12 % of both
/// processes' CPU on a loopback migration of a 256 MiB device state.
public enum DeviceDigestAlgorithm: Sendable, Equatable, CaseIterable, CustomStringConvertible {
    case sha256, xxh3

    /// The name events and documents use.
    public var description: String {
        switch self {
        case .sha256: "sha256"
        case .xxh3: "xxh3-128"
        }
    }

    /// The name messages and the spec use.
    public var displayName: String {
        switch self {
        case .sha256: "SHA-256"
        case .xxh3: "XXH3-128"
        }
    }

    /// The algorithm of a session whose HELLOs listed `encodings` (the source's, which
    /// only lists the digest when the destination did).
    public init(sessionEncodings encodings: [Encoding]) {
        self = encodings.contains(.xxh3Digest) ? .xxh3 : .sha256
    }
}

/// The running digest of one device's stream: the decoded bytes of its chunks in
/// order. `finalize()` returns the 32-byte field and starts over.
public final class DeviceDigest {
    public let algorithm: DeviceDigestAlgorithm
    private let sha256: SHA256Digest?
    private let xxh3: OpaquePointer?

    public init(_ algorithm: DeviceDigestAlgorithm) {
        self.algorithm = algorithm
        switch algorithm {
        case .sha256:
            sha256 = SHA256Digest(); xxh3 = nil
        case .xxh3:
            sha256 = nil
            guard let state = XXH3_createState() else { fatalError("XXH3_createState failed: out of memory") }
            xxh3 = state
            XXH3_128bits_reset(state)
        }
    }

    deinit { if let xxh3 { XXH3_freeState(xxh3) } }

    public func update(_ bytes: [UInt8]) { update(bytes[...]) }

    public func update(_ bytes: ArraySlice<UInt8>) {
        if let sha256 { return sha256.update(bytes) }
        bytes.withUnsafeBytes { raw in
            guard let base = raw.baseAddress, raw.count > 0 else { return }
            // Fails only on a null state, which init rules out.
            guard XXH3_128bits_update(xxh3, base, raw.count) == XXH_OK else { fatalError("XXH3_128bits_update failed") }
        }
    }

    /// The DEVICE_END field: SHA-256, or XXH3-128's canonical form (high then low
    /// 64 bits, each big-endian, as `XXH128_canonicalFromHash`) and 16 zero bytes.
    public func finalize() -> [UInt8] {
        if let sha256 { return sha256.finalize() }
        let hash = XXH3_128bits_digest(xxh3)
        XXH3_128bits_reset(xxh3)
        var field = [UInt8](repeating: 0, count: DeviceEnd.digestSize)
        for k in 0..<8 {
            field[k] = UInt8(truncatingIfNeeded: hash.high64 >> (56 - 8 * UInt64(k)))
            field[8 + k] = UInt8(truncatingIfNeeded: hash.low64 >> (56 - 8 * UInt64(k)))
        }
        return field
    }

    /// The field for one buffer.
    public static func field(_ bytes: [UInt8], _ algorithm: DeviceDigestAlgorithm) -> [UInt8] {
        let digest = DeviceDigest(algorithm)
        digest.update(bytes)
        return digest.finalize()
    }
}

/// Per-thread: owns C state that one thread at a time may use; never shared.
@available(*, unavailable)
extension DeviceDigest: Sendable {}
