import ArgumentParser
import Foundation
import MigrationEngine
import Testing
@testable import vfio_migrate

/// `send --streams` and `receive --max-streams` (protocol version 3): refusals name
/// the option; good values reach the engine's options and what ALPN offers.
@Suite struct StreamOptions {
    static let send = ArgumentValidation.send
    static let receive = ArgumentValidation.receive

    @Test(arguments: [
        (send + ["--streams", "0"], "--streams 0: expected 1...64"),
        (send + ["--streams", "65"], "--streams 65: expected 1...64"),
        (receive + ["--max-streams", "0"], "--max-streams 0: expected 1...64"),
        (receive + ["--max-streams", "many"], "--max-streams"),
        (receive + ["--max-zstd-lanes", "17"], "--max-zstd-lanes 17: expected 0...16"),
    ])
    func badValueIsAUsageErrorNamingTheOption(arguments: [String], text: String) {
        ArgumentValidation().badValueIsAUsageErrorNamingTheOption(arguments: arguments, text: text)
    }

    @Test func streamsReachTheOptionsAndTheOffer() throws {
        let defaults = try #require(try VfioMigrate.parseAsRoot(Self.send) as? Send).tuning.options()
        // By default as many streams as the cores pay for (§14.5: resumable with any number).
        #expect(defaults.streams == StreamCount.forThroughput(cores: ProcessInfo.processInfo.activeProcessorCount))
        if ProcessInfo.processInfo.activeProcessorCount <= 4 {
            // Page copies: version 6 first (§17.1); the XXH3-128 digest: version 5 (§16.1); `auto`
            // compresses with zstd: version 4 (zstd lanes), then version 2 (§15.1).
            #expect(defaults.streams == 1 && defaults.applicationProtocols == ["vfio-migrate/6", "vfio-migrate/5", "vfio-migrate/4", "vfio-migrate/2"],
                    "one stream up to 4 cores")
        }
        let four = try #require(try VfioMigrate.parseAsRoot(Self.send + ["--streams", "4"]) as? Send).tuning.options()
        #expect(four.streams == 4 && four.applicationProtocols == ["vfio-migrate/6", "vfio-migrate/5", "vfio-migrate/4", "vfio-migrate/3", "vfio-migrate/2"])
        let one = try #require(try VfioMigrate.parseAsRoot(Self.send + ["--streams", "1", "--compress", "zlib:1", "--device-digest", "sha256",
                                                                         "--no-page-copies"]) as? Send).tuning.options()
        #expect(one.applicationProtocols == ["vfio-migrate/2"], "one stream without zstd, XXH3 or copies: exactly version 2 as before")
        let digest = try #require(try VfioMigrate.parseAsRoot(Self.send + ["--streams", "1", "--compress", "zlib:1"]) as? Send).tuning.options()
        #expect(digest.deviceDigest == .xxh3 && digest.applicationProtocols == ["vfio-migrate/6", "vfio-migrate/5", "vfio-migrate/2"])
        let receive = try #require(try VfioMigrate.parseAsRoot(Self.receive + ["--max-streams", "3"]) as? Receive)
        #expect(receive.maxStreams == 3)
        let receiveDefault = try #require(try VfioMigrate.parseAsRoot(Self.receive) as? Receive)
        #expect(receiveDefault.maxStreams == StreamCount.defaultMaxStreams)
        #expect(receiveDefault.maxZstdLanes == 4)
        let noLanes = try #require(try VfioMigrate.parseAsRoot(Self.receive + ["--max-zstd-lanes", "0"]) as? Receive)
        #expect(noLanes.maxZstdLanes == 0)
    }
}
