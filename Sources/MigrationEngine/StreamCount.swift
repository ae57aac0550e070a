/// How many TLS streams a session uses by default (PROTOCOL.md §14).
///
/// One stream's TLS record encryption and socket writes take most of one core on
/// the source (and its decryption and reads one on the destination): an extra
/// stream only pays when a core is free to drive it next to the page readers and
/// codec workers, and the destination has one to match. On 4 cores or fewer one
/// stream already competes with the workers (measured on 2 cores: no gain, see
/// docs/PERFORMANCE.md), so the default stays 1, the exact protocol of before; above
/// that, one stream per 4 cores, at most 8 (8 × ~1.2 GB/s covers a 100 Gbit/s NIC).
public enum StreamCount {
    public static let defaultMaxStreams = 8
    /// The most streams `--streams` and `--max-streams` accept.
    public static let limit = 64

    public static func defaultStreams(cores: Int) -> Int {
        cores <= 4 ? 1 : min(defaultMaxStreams, cores / 4)
    }
}
