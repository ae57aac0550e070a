/// The protocol versions this implementation speaks (docs/PROTOCOL.md §10, §13.1).
///
/// Version 2 is version 1 plus session resumption (four frame types, no change to
/// any version-1 byte). It is chosen during the TLS handshake with ALPN, before
/// the destination's HELLO, because the destination speaks first: a version-1
/// peer offers and selects no ALPN identifier at all, so "no ALPN" means version 1
/// and both kinds of peer keep working with each other.
public enum ProtocolVersion: UInt16, Sendable, Comparable, CaseIterable, CustomStringConvertible {
    case v1 = 1
    case v2 = 2
    case v3 = 3
    /// Version 3 plus zstd lanes (§15): a PAGES segment may continue a zstd stream per (stream, lane).
    case v4 = 4
    /// Version 4 plus a faster device digest (§16): DEVICE_END may carry XXH3-128.
    case v5 = 5
    /// Version 5 plus page copies (§17): a PAGES segment may name pages the destination holds.
    case v6 = 6

    public static let latest: ProtocolVersion = .v6

    /// The ALPN protocol identifier a TLS endpoint offers (source) or selects (destination).
    public var alpnIdentifier: String { "vfio-migrate/\(rawValue)" }

    public var description: String { "\(rawValue)" }

    public static func < (a: ProtocolVersion, b: ProtocolVersion) -> Bool { a.rawValue < b.rawValue }

    /// What a source offers in its ClientHello: every version above 1 it is willing
    /// to speak, most preferred first. Version 1 needs no identifier (it is what a
    /// handshake without ALPN means), so a source that only speaks 1 offers nothing.
    public static func alpnOffer(speaking versions: Set<ProtocolVersion>) -> [String] {
        versions.filter { $0 > .v1 }.sorted(by: >).map(\.alpnIdentifier)
    }

    /// The destination's choice: the highest version it speaks among those the
    /// source offered (nil: select no ALPN protocol, which is version 1). Unknown
    /// identifiers are ignored, never refused: a source that offers only versions
    /// this side does not know still gets a version-1 session it can refuse in words.
    public static func select(offered: [String], speaking versions: Set<ProtocolVersion>) -> ProtocolVersion? {
        versions.filter { $0 > .v1 && offered.contains($0.alpnIdentifier) }.max()
    }

    /// The version a finished TLS handshake agreed on: the selected ALPN identifier,
    /// or version 1 when none was selected. An identifier this side did not offer is
    /// a broken peer (RFC 7301 forbids it): nil, and the caller closes the connection.
    public static func negotiated(alpn selected: String?, offered: [String]) -> ProtocolVersion? {
        guard let selected else { return .v1 }
        guard offered.contains(selected) else { return nil }
        return allCases.first { $0.alpnIdentifier == selected && $0 > .v1 }
    }
}
