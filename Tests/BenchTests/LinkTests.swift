import Foundation
import Testing
@testable import vfio_migrate_bench

@Suite struct BenchLinkParsing {
    @Test func allIsTheThreeLinksOfIssue14() throws {
        let links = try BenchLink.parseList("all")
        #expect(links.map(\.name) == ["loopback", "10gbit", "1gbit"])
        #expect(links.map(\.bitsPerSecond) == [nil, 10_000_000_000, 1_000_000_000])
    }

    @Test func ratesAndDuplicates() throws {
        let links = try BenchLink.parseList("500mbit, loopback,1gbit,all")
        #expect(links.map(\.name) == ["500mbit", "loopback", "1gbit", "10gbit"])
        #expect(links[0].bitsPerSecond == 500_000_000 && links[0].isShaped)
        #expect(!links[1].isShaped)
    }

    @Test(arguments: ["", "fast", "0gbit", "10", "-1gbit", "1tbit", "1000gbit"])
    func refused(_ text: String) {
        #expect(throws: BenchLinkError.self) { try BenchLink.parseList(text) }
    }
}

@Suite struct NamespacePairCommands {
    let pair = NamespacePair(owner: 4_194_303)  // the largest pid Linux hands out

    @Test func interfaceNamesFitIFNAMSIZ() {
        #expect(pair.sourceVeth.utf8.count <= 15 && pair.destinationVeth.utf8.count <= 15)
        #expect(pair.sourceVeth != pair.destinationVeth && pair.source != pair.destination)
    }

    @Test func setupJoinsTheNamespacesWithOneVethAndAddressesIt() {
        let c = pair.setupCommands
        #expect(c.first == ["ip", "netns", "add", "vfmb4194303-src"])
        #expect(c.contains(["ip", "link", "add", "vfmb4194303s", "netns", "vfmb4194303-src", "type", "veth",
                            "peer", "name", "vfmb4194303d", "netns", "vfmb4194303-dst"]))
        #expect(c.contains(["ip", "-n", "vfmb4194303-dst", "addr", "add", "10.213.9.2/24", "dev", "vfmb4194303d"]))
        #expect(c.contains(["ip", "-n", "vfmb4194303-src", "link", "set", "lo", "up"]))
        #expect(pair.teardownCommands == [["ip", "netns", "del", "vfmb4194303-src"], ["ip", "netns", "del", "vfmb4194303-dst"]])
    }

    @Test func shapingIsTbfOnTheSourceEgress() {
        #expect(pair.shapeCommand(bitsPerSecond: 1_000_000_000) ==
                ["ip", "netns", "exec", "vfmb4194303-src", "tc", "qdisc", "replace", "dev", "vfmb4194303s", "root",
                 "tbf", "rate", "1gbit", "burst", "512kb", "latency", "20ms"])
        #expect(NamespacePair.tcRate(10_000_000_000) == "10gbit")
        #expect(NamespacePair.tcRate(500_000_000) == "500mbit")
        #expect(NamespacePair.tcRate(1_500) == "1500bit")
    }

    @Test func eachSideRunsInItsNamespaceAndDialsTheDestinationAddress() {
        let e = pair.endpoints
        #expect(e.sourcePrefix == ["ip", "netns", "exec", "vfmb4194303-src"])
        #expect(e.destinationPrefix == ["ip", "netns", "exec", "vfmb4194303-dst"])
        #expect(e.destinationAddress == "10.213.9.2")
    }

    @Test func leftoversAreThePairsOfBenchesNoLongerRunning() {
        let listing = """
            vfmb77-src (id: 3)
            vfmb77-dst (id: 2)
            vfmb12-src
            vfm-src (id: 1)
            vfmbX-src
            vfmb88-other
            other
            """
        let running: Set<Int32> = [12]
        #expect(NamespacePair.leftovers(inNetnsList: listing, isRunning: { running.contains($0) }) == ["vfmb77-src", "vfmb77-dst"])
        #expect(NamespacePair.names(inNetnsList: listing).count == 7)
    }
}

/// The real thing: needs root and iproute2; skipped (not failed) without them.
@Suite(.serialized) struct ShapedLinkLabLifecycle {
    static let available = ShapedLinkLab.unavailableReason() == nil

    static func namespaces() -> [String] { NamespacePair.names(inNetnsList: (try? BenchCommand.run(["ip", "netns", "list"])) ?? "") }

    /// A pid nothing runs as: what a killed bench's pid looks like.
    static func deadPid() -> Int32 {
        var pid: Int32 = 4_000_000
        while kill(pid, 0) == 0 || errno == EPERM { pid += 1 }
        return pid
    }

    @Test(.enabled(if: available, "needs root, ip and tc"))
    func upShapedThenRemovedWithTheLeftoversOfAKilledBench() throws {
        let stale = NamespacePair(owner: Self.deadPid())
        try BenchCommand.run(["ip", "netns", "add", stale.source])
        defer { _ = try? BenchCommand.run(["ip", "netns", "del", stale.source]) }
        let lab = ShapedLinkLab(say: { _ in })
        defer { lab.tearDown() }
        let endpoints = try lab.shape(BenchLink(name: "1gbit", bitsPerSecond: 1_000_000_000))
        let mine = NamespacePair(owner: getpid())
        #expect(endpoints.destinationAddress == NamespacePair.destinationAddress)
        #expect(!Self.namespaces().contains(stale.source), "the killed bench's namespace is removed")
        #expect(Self.namespaces().contains(mine.source) && Self.namespaces().contains(mine.destination))
        let qdisc = try BenchCommand.run(["ip", "netns", "exec", mine.source, "tc", "qdisc", "show", "dev", mine.sourceVeth])
        #expect(qdisc.contains("tbf") && qdisc.contains("1Gbit"), "\(qdisc)")
        let addr = try BenchCommand.run(["ip", "-n", mine.destination, "-o", "addr", "show", "dev", mine.destinationVeth])
        #expect(addr.contains("inet \(NamespacePair.destinationAddress)/24"), "\(addr)")
        lab.tearDown()
        #expect(!Self.namespaces().contains(mine.source) && !Self.namespaces().contains(mine.destination))
    }

    @Test func loopbackNeedsNoNamespaces() throws {
        let lab = ShapedLinkLab(say: { _ in })
        let e = try lab.shape(.loopback)
        #expect(e.sourcePrefix.isEmpty && e.destinationPrefix.isEmpty && e.destinationAddress == "127.0.0.1")
    }
}
