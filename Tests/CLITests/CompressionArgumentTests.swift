import ArgumentParser
import Testing
@testable import vfio_migrate

/// `--compress zstd:N` and `receive --no-zstd` as an operator types them.
@Suite struct CompressionArguments {
    @Test(arguments: [("zstd:-50", -50), ("zstd:-5", -5), ("zstd:1", 1), ("zstd:19", 19)])
    func zstdLevelsParse(text: String, level: Int) throws {
        let send = try #require(try VfioMigrate.parseAsRoot(ArgumentValidation.send + ["--compress", text]) as? Send)
        #expect(send.tuning.compress == .zstd(level: level))
        #expect(send.tuning.options().compression == .zstd(level: level))
    }

    @Test(arguments: ["zstd:0", "zstd:20", "zstd:-51", "zstd:03", "zstd"])
    func zstdLevelsOutsideTheRangeAreUsageErrors(text: String) {
        do {
            _ = try VfioMigrate.parseAsRoot(ArgumentValidation.send + ["--compress", text])
            Issue.record("accepted: \(text)")
        } catch {
            #expect(VfioMigrate.exitCode(for: error) == .validationFailure)
            #expect(VfioMigrate.message(for: error).contains("--compress"))
        }
    }

    @Test func noZstdIsAReceiveFlag() throws {
        let receive = try #require(try VfioMigrate.parseAsRoot(ArgumentValidation.receive + ["--no-zstd"]) as? Receive)
        #expect(receive.noZstd)
        let plain = try #require(try VfioMigrate.parseAsRoot(ArgumentValidation.receive) as? Receive)
        #expect(!plain.noZstd)
    }
}
