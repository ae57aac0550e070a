internal import CXXHash

/// What a source remembers of a page it sent, to send the same bytes again as a copy
/// (PROTOCOL.md §17): XXH3-128 of the page, keyed by a secret of the session.
///
/// The destination never sees a fingerprint; a copy's correctness rests on two pages
/// with equal fingerprints holding equal bytes. A secret the guest cannot read keeps a
/// guest from making two different pages collide on purpose (a crafted collision with a
/// page it cannot write would let it choose that page's bytes at the destination), and
/// 128 bits keep an accidental one out of reach. The source also compares the page with
/// the one it names before it sends a copy.
public struct PageFingerprint: Sendable, Equatable {
    public var high: UInt64
    public var low: UInt64

    /// Marks a slot that remembers no page; `PageFingerprinter` never returns it.
    public static let none = PageFingerprint(high: 0, low: 0)

    public init(high: UInt64, low: UInt64) { self.high = high; self.low = low }
}

/// XXH3-128 with a session's secret (at least `minimumSecretBytes` random bytes).
public struct PageFingerprinter: Sendable {
    public static let minimumSecretBytes = Int(XXH3_SECRET_SIZE_MIN)
    /// The size the reference draws: more than the minimum, as libxxhash recommends.
    public static let secretBytes = 192

    private let secret: [UInt8]

    public init(secret: [UInt8]) {
        precondition(secret.count >= PageFingerprinter.minimumSecretBytes, "an XXH3 secret has at least \(PageFingerprinter.minimumSecretBytes) bytes")
        self.secret = secret
    }

    /// A fingerprinter with a fresh secret from `generator` (the system's by default).
    public static func random<G: RandomNumberGenerator>(using generator: inout G) -> PageFingerprinter {
        PageFingerprinter(secret: (0..<secretBytes).map { _ in UInt8.random(in: 0...255, using: &generator) })
    }

    public static func random() -> PageFingerprinter {
        var system = SystemRandomNumberGenerator()
        return random(using: &system)
    }

    /// A cheap summary of a page (eight words spread over it): equal pages have equal
    /// sketches, so a page whose sketch the source never sent cannot be a copy, and its
    /// fingerprint need not be taken. On a guest without repeated pages that saves
    /// almost all of the lookups' hashing.
    public func sketch(_ page: RawSpan) -> UInt32 {
        let stride = page.byteCount / 8
        guard stride >= 8 else { return 0 }
        var h: UInt64 = 0x9E37_79B9_7F4A_7C15
        for k in 0..<8 {
            h = (h ^ page.unsafeLoadUnaligned(fromByteOffset: k * stride, as: UInt64.self)) &* 0xBF58_476D_1CE4_E5B9
            h ^= h >> 31
        }
        return UInt32(truncatingIfNeeded: h >> 32)
    }

    /// Fingerprint and sketch, for a page sent with its bytes.
    public func identify(_ page: RawSpan) -> (print: PageFingerprint, sketch: UInt32) { (fingerprint(page), sketch(page)) }

    public func fingerprint(_ page: RawSpan) -> PageFingerprint {
        let hash = page.withUnsafeBytes { bytes in
            secret.withUnsafeBytes { key in XXH3_128bits_withSecret(bytes.baseAddress, bytes.count, key.baseAddress, key.count) }
        }
        let print = PageFingerprint(high: hash.high64, low: hash.low64)
        return print == .none ? PageFingerprint(high: 0, low: 1) : print
    }
}
