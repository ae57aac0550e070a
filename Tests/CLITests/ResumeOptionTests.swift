import ArgumentParser
import MigrationEngine
import Testing
@testable import vfio_migrate

/// `--reconnect-timeout` (both commands) and `--resume-window` (send): refusals
/// name the option and say why; good values reach the engine's options.
@Suite struct ResumeOptions {
    static let send = ArgumentValidation.send
    static let receive = ArgumentValidation.receive

    @Test(arguments: [
        (send + ["--reconnect-timeout", "-1"], "--reconnect-timeout"),
        (send + ["--reconnect-timeout", "nan"], "--reconnect-timeout"),
        (receive + ["--reconnect-timeout", "inf"], "--reconnect-timeout"),
        (send + ["--resume-window", "16M"], "--resume-window 16M: below the minimum of 17825816 bytes"),
        (send + ["--resume-window", "17M"], "below the minimum"),
        (send + ["--resume-window", "lots"], "--resume-window"),
    ])
    func badValueIsAUsageErrorNamingTheOption(arguments: [String], text: String) {
        ArgumentValidation().badValueIsAUsageErrorNamingTheOption(arguments: arguments, text: text)
    }

    @Test func defaultsResumeAndZeroMeansVersionOneOnly() throws {
        let defaults = try #require(try VfioMigrate.parseAsRoot(Self.send) as? Send).tuning.options()
        #expect(defaults.reconnectTimeoutSeconds == 30 && defaults.resumeWindowBytes == 64 << 20)
        // The default is one stream, so the default session is resumable (version 2, not 3),
        // `auto` uses zstd, so version 4 (zstd lanes) is offered (§15.1), the XXH3-128
        // digest adds version 5 (§16.1) and page copies put version 6 first (§17.1).
        #expect(defaults.applicationProtocols == ["vfio-migrate/6", "vfio-migrate/5", "vfio-migrate/4", "vfio-migrate/2"])
        let noCopies = try #require(try VfioMigrate.parseAsRoot(Self.send + ["--no-page-copies"]) as? Send).tuning.options()
        #expect(!noCopies.pageCopies && noCopies.applicationProtocols == ["vfio-migrate/5", "vfio-migrate/4", "vfio-migrate/2"])
        #expect(try #require(try VfioMigrate.parseAsRoot(Self.receive + ["--no-page-copies"]) as? Receive).noPageCopies)
        let off = try #require(try VfioMigrate.parseAsRoot(Self.send + ["--reconnect-timeout", "0", "--resume-window", "32M"]) as? Send)
        #expect(off.tuning.options().applicationProtocols.isEmpty, "version 1: no ALPN offered")
        #expect(off.tuning.options().resumeWindowBytes == 32 << 20)
        let receive = try #require(try VfioMigrate.parseAsRoot(Self.receive + ["--reconnect-timeout", "5"]) as? Receive)
        #expect(receive.reconnectTimeout == 5)
    }
}
