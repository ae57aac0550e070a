import Foundation

/// One network the migrations of a bench invocation cross: 127.0.0.1, or two
/// network namespaces joined by a veth pair whose source end `tc tbf` shapes.
struct BenchLink: Equatable, Sendable {
    /// As the user names it and the table shows it: `loopback`, `10gbit`, `1gbit`, `500mbit`.
    let name: String
    /// The tbf rate in bits per second; nil for loopback (unshaped, no namespaces).
    let bitsPerSecond: UInt64?

    var isShaped: Bool { bitsPerSecond != nil }

    static let loopback = BenchLink(name: "loopback", bitsPerSecond: nil)
    /// `--link all`: the three links of issue 14's table.
    static let all: [BenchLink] = [.loopback, BenchLink(name: "10gbit", bitsPerSecond: 10_000_000_000), BenchLink(name: "1gbit", bitsPerSecond: 1_000_000_000)]

    /// `loopback`, `all`, or a rate as `tc` spells it (`10gbit`, `1gbit`, `500mbit`).
    static func parse(_ text: String) throws(BenchLinkError) -> [BenchLink] {
        let t = text.trimmingCharacters(in: .whitespaces).lowercased()
        if t == "all" { return all }
        if t == "loopback" || t == "lo" { return [.loopback] }
        for (suffix, unit) in [("gbit", 1_000_000_000 as UInt64), ("mbit", 1_000_000)] where t.hasSuffix(suffix) {
            guard let n = UInt64(t.dropLast(suffix.count)), n > 0, n <= 400 * 1_000_000_000 / unit else { break }
            return [BenchLink(name: t, bitsPerSecond: n * unit)]
        }
        throw .unknown(text)
    }

    /// A comma-separated `--link` list, duplicates dropped, in the order given.
    static func parseList(_ text: String) throws(BenchLinkError) -> [BenchLink] {
        var links: [BenchLink] = []
        for part in text.split(separator: ",") {
            for link in try parse(String(part)) where !links.contains(link) { links.append(link) }
        }
        guard !links.isEmpty else { throw .unknown(text) }
        return links
    }
}

enum BenchLinkError: Error, CustomStringConvertible {
    case unknown(String)
    var description: String {
        switch self {
        case .unknown(let t): return "--link \(t): expected loopback, all, or a rate such as 10gbit, 1gbit, 500mbit (comma-separated)"
        }
    }
}

/// Where each side of a migration runs on one link: the command prefix that
/// puts a process into its namespace, and the address the receiver listens on.
struct LinkEndpoints: Sendable {
    var sourcePrefix: [String] = []
    var destinationPrefix: [String] = []
    var destinationAddress = "127.0.0.1"

    static let loopback = LinkEndpoints()
}
