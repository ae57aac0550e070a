import Foundation

/// How many TLS streams a session uses (PROTOCOL.md §14).
///
/// The default is what pays on this host, `forThroughput(cores:)`: a session of
/// several streams resumes after a lost connection like one of one stream (§14.5),
/// so nothing is traded for it. With `--reconnect-timeout 0` the session is version
/// 1, one stream anyway.
public enum StreamCount {
    /// The library's and the CLI's `--streams` default: by this host's cores.
    public static var defaultStreams: Int { forThroughput(cores: ProcessInfo.processInfo.activeProcessorCount) }
    public static let defaultMaxStreams = 16
    /// The most streams `--streams` and `--max-streams` accept.
    public static let limit = 64

    /// Streams worth having on a host of `cores` cores.
    /// One stream's TLS record encryption and socket writes take most of one core on
    /// the source (and its reads and decryption one on the destination), moving
    /// 0.7–1.2 GB/s: an extra stream only pays when a core is free to drive it next to
    /// the page readers and codec workers. On 4 cores or fewer one stream already
    /// competes with the workers (measured on 2 cores: 2 and 4 streams lose, see
    /// docs/PERFORMANCE.md). Above that, one stream per 2 cores, at most 16: a
    /// 100 Gbit/s NIC needs 11–17 streams at those rates, and 32 cores have the 14–20
    /// per side that moving 12.5 GB/s costs.
    public static func forThroughput(cores: Int) -> Int {
        cores <= 4 ? 1 : min(defaultMaxStreams, cores / 2)
    }
}
