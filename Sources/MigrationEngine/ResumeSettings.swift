import MigrationTLS
import MigrationWire

/// The protocol versions a side speaks follow from its reconnect timeout (§13.1: a
/// side that does not resume neither offers nor selects version 2), for version 3
/// (§14.1) from whether it wants more than one stream, for version 4 (§15.1) from
/// whether it uses zstd, for version 5 (§16.1) from whether it wants the XXH3-128
/// device digest and for version 6 (§17.1) from whether it wants page copies: a side
/// held to one stream, without zstd, with SHA-256 and without copies speaks exactly
/// what it spoke before, byte for byte.
enum ResumeSettings {
    static func versions(reconnectTimeoutSeconds: Double, streams: Int = 1, zstdLanes: Bool = false,
                         fastDigest: Bool = false, pageCopies: Bool = false) -> Set<ProtocolVersion> {
        guard reconnectTimeoutSeconds > 0 else { return [.v1] }
        var versions: Set<ProtocolVersion> = streams > 1 ? [.v1, .v2, .v3] : [.v1, .v2]
        if zstdLanes { versions.insert(.v4) }
        if fastDigest { versions.insert(.v5) }
        if pageCopies { versions.insert(.v6) }
        return versions
    }

    /// The version a finished TLS handshake agreed on; a peer that selected an
    /// identifier this side did not offer is broken (RFC 7301).
    static func negotiated(_ stream: TLSStream, offered: [String]) throws(MigrationFailure) -> ProtocolVersion {
        guard let version = ProtocolVersion.negotiated(alpn: stream.applicationProtocol, offered: offered) else {
            throw .incompatible("the peer selected ALPN protocol \(stream.applicationProtocol ?? "-"), which this side did not offer")
        }
        return version
    }

    /// The smallest `--resume-window` that always makes room again (§13.3).
    static func minimumWindowBytes(_ limits: WireLimits) -> Int {
        RetainedWindow.minimumCapacity(largestFrame: limits.maxPayload + FrameDecoder.headerSize)
    }
}

extension SenderOptions {
    /// ALPN identifiers the source offers (`TLSConfiguration.applicationProtocols`).
    public var applicationProtocols: [String] {
        ProtocolVersion.alpnOffer(speaking: ResumeSettings.versions(reconnectTimeoutSeconds: reconnectTimeoutSeconds, streams: streams,
                                                                    zstdLanes: compression.encodings.contains(.zstd),
                                                                    fastDigest: deviceDigest == .xxh3, pageCopies: pageCopies))
    }

    /// What the source's HELLO may list: its codecs and, for versions 5 and 6, the digest and page copies.
    var helloEncodings: [Encoding] {
        compression.encodings + (deviceDigest == .xxh3 ? [.xxh3Digest] : []) + (pageCopies ? [.pageCopies] : [])
    }

    /// The smallest `resumeWindowBytes` accepted (the largest frame plus the ACK interval).
    public var minimumResumeWindowBytes: Int { ResumeSettings.minimumWindowBytes(limits) }
}

extension ReceiverOptions {
    /// ALPN identifiers the destination selects among, most preferred first.
    public var applicationProtocols: [String] {
        ProtocolVersion.alpnOffer(speaking: ResumeSettings.versions(reconnectTimeoutSeconds: reconnectTimeoutSeconds, streams: maxStreams,
                                                                    zstdLanes: encodings.contains(.zstd) && maxZstdLanes > 0,
                                                                    fastDigest: deviceDigest == .xxh3, pageCopies: pageCopies))
    }

    /// What the destination's HELLO may list: its codecs and, for versions 5 and 6, the digest and page copies.
    var helloEncodings: [Encoding] { encodings + (deviceDigest == .xxh3 ? [.xxh3Digest] : []) + (pageCopies ? [.pageCopies] : []) }
}
