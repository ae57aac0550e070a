/// How many TLS streams a session uses (PROTOCOL.md §14).
///
/// The default is one stream: a session of several streams is not resumed after a
/// lost connection (§14.5), and a dropped connection must not fail a migration that
/// the operator did not ask to trade for throughput (`--reconnect-timeout` is on by
/// default). With `--reconnect-timeout 0` the session is version 1, one stream anyway.
/// Several streams are the operator's choice: `forThroughput(cores:)` is what pays.
public enum StreamCount {
    public static let defaultStreams = 1
    public static let defaultMaxStreams = 16
    /// The most streams `--streams` and `--max-streams` accept.
    public static let limit = 64

    /// Streams worth asking for when throughput matters more than resumption.
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
