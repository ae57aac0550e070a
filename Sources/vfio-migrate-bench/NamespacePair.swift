import Foundation

/// The `ip`/`tc` commands of two network namespaces joined by a veth pair,
/// as argument vectors (built here, run by `ShapedLinkLab`). The names carry
/// the bench's pid, so parallel benches never share a pair and a pair left by
/// a killed bench is recognised: its pid no longer runs.
struct NamespacePair: Equatable, Sendable {
    static let namePrefix = "vfmb"
    static let sourceAddress = "10.213.9.1"
    static let destinationAddress = "10.213.9.2"

    let owner: Int32

    var source: String { "\(Self.namePrefix)\(owner)-src" }
    var destination: String { "\(Self.namePrefix)\(owner)-dst" }
    /// Interface names: at most 15 bytes (IFNAMSIZ - 1); a pid has at most 7 digits.
    var sourceVeth: String { "\(Self.namePrefix)\(owner)s" }
    var destinationVeth: String { "\(Self.namePrefix)\(owner)d" }

    /// Both namespaces, the veth pair between them, addresses, links up (loopback too: QEMU and TLS need no more).
    var setupCommands: [[String]] {
        [["ip", "netns", "add", source],
         ["ip", "netns", "add", destination],
         ["ip", "link", "add", sourceVeth, "netns", source, "type", "veth", "peer", "name", destinationVeth, "netns", destination],
         ["ip", "-n", source, "addr", "add", "\(Self.sourceAddress)/24", "dev", sourceVeth],
         ["ip", "-n", destination, "addr", "add", "\(Self.destinationAddress)/24", "dev", destinationVeth],
         ["ip", "-n", source, "link", "set", "lo", "up"],
         ["ip", "-n", destination, "link", "set", "lo", "up"],
         ["ip", "-n", source, "link", "set", sourceVeth, "up"],
         ["ip", "-n", destination, "link", "set", destinationVeth, "up"]]
    }

    /// Shapes the source's egress (the migration's direction): tbf, as in issue 14's measurements.
    func shapeCommand(bitsPerSecond: UInt64) -> [String] {
        ["ip", "netns", "exec", source, "tc", "qdisc", "replace", "dev", sourceVeth, "root",
         "tbf", "rate", Self.tcRate(bitsPerSecond), "burst", "512kb", "latency", "20ms"]
    }

    /// Deleting a namespace deletes the veth end inside it, and with it the pair.
    var teardownCommands: [[String]] { [["ip", "netns", "del", source], ["ip", "netns", "del", destination]] }

    var endpoints: LinkEndpoints {
        LinkEndpoints(sourcePrefix: ["ip", "netns", "exec", source], destinationPrefix: ["ip", "netns", "exec", destination],
                      destinationAddress: Self.destinationAddress)
    }

    /// A rate as `tc` reads it, in the largest unit that divides it.
    static func tcRate(_ bits: UInt64) -> String {
        if bits % 1_000_000_000 == 0 { return "\(bits / 1_000_000_000)gbit" }
        if bits % 1_000_000 == 0 { return "\(bits / 1_000_000)mbit" }
        return "\(bits)bit"
    }

    /// The names in `ip netns list` output: "vfmb123-src (id: 4)" or just "vfmb123-src" per line.
    static func names(inNetnsList listing: String) -> [String] {
        listing.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }
    }

    /// Namespaces in `ip netns list` output that a bench made and whose bench is gone.
    static func leftovers(inNetnsList listing: String, isRunning: (Int32) -> Bool) -> [String] {
        names(inNetnsList: listing).compactMap { name -> String? in
            guard name.hasPrefix(namePrefix) else { return nil }
            let rest = name.dropFirst(namePrefix.count)
            guard rest.hasSuffix("-src") || rest.hasSuffix("-dst"), let pid = Int32(rest.dropLast(4)), pid > 0 else { return nil }
            return isRunning(pid) ? nil : name
        }
    }
}

/// Runs one command (no shell) and returns its stdout, or a `BenchError`
/// naming the command and what it printed on stderr.
enum BenchCommand {
    @discardableResult
    static func run(_ argv: [String]) throws(BenchError) -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = argv
        let out = Pipe(), err = Pipe()
        p.standardOutput = out; p.standardError = err; p.standardInput = FileHandle.nullDevice
        do { try p.run() } catch { throw .commandFailed(command: argv, status: -1, stderr: "\(error)") }
        // Short outputs only (ip, tc, openssl): reading stdout to its end before stderr cannot fill the other pipe.
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw .commandFailed(command: argv, status: p.terminationStatus, stderr: String(decoding: e, as: UTF8.self))
        }
        return String(decoding: o, as: UTF8.self)
    }

    /// Whether `name` is an executable in a PATH directory.
    static func onPath(_ name: String) -> Bool {
        let dirs = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(separator: ":")
        return dirs.contains { FileManager.default.isExecutableFile(atPath: "\($0)/\(name)") }
    }
}
