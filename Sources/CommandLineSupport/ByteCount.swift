import Foundation
import ArgumentParser

/// A byte count as operators type it: `4096`, `64K`, `256M`, `1G`, `1T` (binary
/// units) or `0x1000`. Both executables take sizes this way, so a bad value is a
/// usage error (exit 64) naming the option, at parse time.
public struct ByteCount: Sendable, Hashable, CustomStringConvertible {
    public let bytes: UInt64
    public init(bytes: UInt64) { self.bytes = bytes }

    /// Nil when malformed or when the value overflows 64 bits.
    public init?(parsing text: String) {
        var digits = Substring(text.trimmingCharacters(in: .whitespaces))
        guard let last = digits.last else { return nil }
        let shift: UInt64
        switch last {
        case "K", "k": shift = 10
        case "M", "m": shift = 20
        case "G", "g": shift = 30
        case "T", "t": shift = 40
        default: shift = 0
        }
        if shift > 0 { digits.removeLast() }
        let value = digits.hasPrefix("0x") ? UInt64(digits.dropFirst(2), radix: 16) : UInt64(digits)
        guard let value else { return nil }
        let (product, overflow) = value.multipliedReportingOverflow(by: 1 << shift)
        guard !overflow else { return nil }
        bytes = product
    }

    /// The shortest exact form (`256M`), as `--help` shows defaults.
    public var description: String {
        for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] where bytes != 0 && bytes % (1 << shift) == 0 {
            return "\(bytes >> shift)\(unit)"
        }
        return "\(bytes)"
    }

    /// For people: `1.5 GiB`, `512 B`.
    public var formatted: String { formatBytes(bytes) }
}

extension ByteCount: ExpressibleByArgument {
    public init?(argument: String) { self.init(parsing: argument) }
    public static var defaultCompletionKind: CompletionKind { .default }
}

/// `1.5 GiB`, `512 B`: sizes in progress lines, summaries and reports.
public func formatBytes(_ n: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var v = Double(n)
    var u = 0
    while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
    return u == 0 ? "\(n) B" : String(format: "%.1f %@", v, units[u])
}
