import Foundation
import Logging
import MigrationWire

public struct ReceiverOptions: Sendable {
    public var workers: Int = max(ProcessInfo.processInfo.activeProcessorCount, 1)
    public var peerTimeoutSeconds: Double = 30
    public var limits: WireLimits = .default
    /// What the destination's HELLO lists; zstd only in a version-2 session (the
    /// HELLO leaves out what the session's version does not define).
    public var encodings: [Encoding] = [.raw, .deflate, .zstd]
    /// Told `startGuest()` after COMMIT once the devices run; nil = none.
    public var guestControl: (any GuestControl)?
    /// `--reconnect-timeout`: how long a session whose connection broke waits for its
    /// source to come back (PROTOCOL.md §13); 0 = version 1 only.
    public var reconnectTimeoutSeconds: Double = 30
    /// `--max-streams`: the most TLS streams a source may open for one session
    /// (PROTOCOL.md §14); 1 = the single-stream protocol of before.
    public var maxStreams: Int = StreamCount.defaultMaxStreams
    /// The most zstd lanes this side decodes in a session, over all its streams
    /// (PROTOCOL.md §15.2): each lane's decoder keeps a window of up to 16 MiB, so this
    /// bounds that memory.
    /// 0 = no lanes (and no version 4); lanes need zstd in `encodings`.
    public var maxZstdLanes: Int = 4
    /// `--device-digest`: the DEVICE_END digest this side verifies (PROTOCOL.md §16).
    /// `.xxh3` offers version 5 and lists encoding 4 there, so a source that also
    /// wants it sends XXH3-128; `.sha256` keeps every session on SHA-256.
    public var deviceDigest: DeviceDigestAlgorithm = .xxh3
    /// `--no-page-copies` clears it: with it, a resuming destination selects version 6
    /// and lists encoding 5, so a source may send copy segments (PROTOCOL.md §17).
    public var pageCopies = true
    /// Diagnostics (phases at info, frames at trace).
    public var logger = Logger(label: "vfio-migrate.destination")
    public init() {}
}
