import Foundation

/// The host's aggregate CPU time from /proc/stat's `cpu` line, in clock ticks (USER_HZ).
struct HostCPUTimes: Sendable, Equatable {
    /// idle + iowait: time no thread wanted a core.
    var idleTicks: UInt64

    /// The `cpu` line's fields are user nice system idle iowait irq softirq steal ...;
    /// nil when there is no such line or it has fewer than five numbers.
    static func parse(procStat text: String) -> HostCPUTimes? {
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("cpu ") }) else { return nil }
        let fields = line.split(separator: " ").dropFirst().compactMap { UInt64($0) }
        guard fields.count >= 5 else { return nil }
        return HostCPUTimes(idleTicks: fields[3] + fields[4])
    }

    /// The thin edge: nil without a readable /proc/stat (then `auto` keeps its workers model).
    static func read() -> HostCPUTimes? {
        (try? String(contentsOfFile: "/proc/stat", encoding: .utf8)).flatMap { parse(procStat: $0) }
    }

    /// USER_HZ, the unit of /proc/stat's counters.
    static let ticksPerSecond = Double(max(sysconf(Int32(_SC_CLK_TCK)), 1))
}

/// The cores compression may use, measured: the host's idle cores plus the CPU our
/// own codec workers used in the same window (that CPU would be idle without
/// compression). Decayed like the link's rate, so it follows load that comes and goes.
/// Pure: samples and codec CPU come in as numbers.
struct IdleCoreMeter: Sendable {
    /// Below this many idle cores the host is saturated: compressing takes CPU that
    /// something else on it (a receiver on the same host, other work) was using, so
    /// the codec's CPU is not counted as free.
    static let saturated = 0.15
    /// Kept idle when the host has room: a level that used every free core would
    /// leave it saturated, and the next decision would flip to raw.
    static let reserve = 0.4

    /// Readings count once they span this long: /proc/stat counts in ticks of 10 ms, so
    /// one 20 ms reading of two cores can say 0 or 2 idle by rounding alone (it said 0 at
    /// the start of a 1 Gbit/s migration, and the first 50 MiB went raw; issue 14).
    static let minimumSpanSeconds = 0.1

    private(set) var last: (times: HostCPUTimes, at: ContinuousClock.Instant)?
    private var codecSecondsSinceLast = 0.0
    /// Wall seconds the readings cover (not decayed).
    private var span = 0.0
    /// Core-seconds idle (`bytes`) and of our codecs (`output`) over wall seconds.
    private var window = AdaptiveEncoding.DecayedRate()

    /// A worker spent `seconds` of CPU compressing.
    mutating func addCodecCPU(seconds: Double) { codecSecondsSinceLast += max(seconds, 0) }

    /// A /proc/stat reading: the idle time since the previous one joins the window.
    mutating func sample(_ times: HostCPUTimes, at now: ContinuousClock.Instant, ticksPerSecond: Double = HostCPUTimes.ticksPerSecond) {
        defer { last = (times, now) }
        guard let last, now > last.at, times.idleTicks >= last.times.idleTicks else { return }
        let idle = Double(times.idleTicks - last.times.idleTicks) / ticksPerSecond
        window.add(bytes: idle, seconds: (now - last.at).seconds, output: codecSecondsSinceLast, decay: AdaptiveEncoding.linkDecay)
        span += (now - last.at).seconds
        codecSecondsSinceLast = 0
    }

    /// Idle cores over the window; nil before the readings span `minimumSpanSeconds`.
    var idleCores: Double? { measured ? window.bytes / window.seconds : nil }
    /// Cores our codecs used over the window.
    var codecCores: Double? { measured ? window.output / window.seconds : nil }
    private var measured: Bool { window.seconds > 0 && span >= IdleCoreMeter.minimumSpanSeconds }

    /// Fewer idle cores than `saturated` over the window.
    var isSaturated: Bool { idleCores.map { $0 < IdleCoreMeter.saturated } ?? false }

    /// What compression may use: idle + codec cores less the reserve; only the idle
    /// cores when the host is saturated (then raw, unless the link is so slow that
    /// those few keep it full). Nil until the readings span `minimumSpanSeconds`.
    var compressingCores: Double? {
        guard let idle = idleCores, let codec = codecCores else { return nil }
        guard !isSaturated else { return idle }
        return max(0, idle + codec - IdleCoreMeter.reserve)
    }
}
