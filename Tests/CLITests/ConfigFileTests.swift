import ArgumentParser
import Foundation
import Testing
@testable import vfio_migrate

/// `--config FILE`: the keys are the commands' own long options, the command line wins.
@Suite struct ConfigFileTests {
    static let receiveOptions = OptionTable(command: Receive.self)

    @Test func optionKindsComeFromTheCommandsDefinitions() {
        let kinds = Self.receiveOptions.kinds
        #expect(kinds["listen"] == .option)
        #expect(kinds["peer-name"] == .option)
        #expect(kinds["device"] == .repeatingOption)
        #expect(kinds["allow-peer"] == .repeatingOption)
        #expect(kinds["keep-listening"] == .flag)
        #expect(kinds["allow-dev-certs"] == .flag)
        #expect(kinds["help"] == nil)
        #expect(OptionTable(command: Send.self).kinds["compress"] == .option)
    }

    @Test func linesBecomeArgumentsInOrder() throws {
        let file = try ConfigFile(text: """
            # a comment
              ca = /etc/pki/ca.pem
            peer-name=src.example.net
            device = gpu0=vfio:12/0000:3b:00.0,compat=fw 5.2
            device = nic0=file:/dev/x
            keep-listening = yes
            json = false
            crl = "/path with spaces/crl.pem"

            """, path: "r.conf")
        let args = try file.arguments(for: Self.receiveOptions, command: "receive", givenOnCommandLine: [])
        #expect(args == ["--ca", "/etc/pki/ca.pem", "--peer-name", "src.example.net",
                         "--device", "gpu0=vfio:12/0000:3b:00.0,compat=fw 5.2", "--device", "nic0=file:/dev/x",
                         "--keep-listening", "--crl", "/path with spaces/crl.pem"])
    }

    @Test func theCommandLineReplacesTheFilesValues() throws {
        let file = try ConfigFile(text: "listen = systemd\ndevice = a=sim:\ndevice = b=sim:\nca = ca.pem\n", path: "r.conf")
        let args = try file.arguments(for: Self.receiveOptions, command: "receive", givenOnCommandLine: ["listen", "device"])
        #expect(args == ["--ca", "ca.pem"])
    }

    @Test func mistakesNameTheFileLineAndKey() throws {
        let cases: [(String, ConfigFileError)] = [
            ("listen 127.0.0.1:1", .malformed(path: "r.conf", line: 1, text: "listen 127.0.0.1:1")),
            ("\nlisten-on = x", .unknownKey(path: "r.conf", line: 2, key: "listen-on", command: "receive")),
            ("ca = a\nca = b", .repeated(path: "r.conf", line: 2, key: "ca")),
            ("json = maybe", .notAFlagValue(path: "r.conf", line: 1, key: "json", value: "maybe")),
            ("config = other.conf", .nested(path: "r.conf", line: 1)),
            ("--ca = x", .malformed(path: "r.conf", line: 1, text: "--ca = x")),
        ]
        for (text, expected) in cases {
            #expect(throws: expected) {
                try ConfigFile(text: text, path: "r.conf").arguments(for: Self.receiveOptions, command: "receive", givenOnCommandLine: [])
            }
        }
        #expect(throws: ConfigFileError.configGivenTwice) {
            try ConfigExpansion.expand(["receive", "--config", "a", "--config=b"], commands: ["receive": Receive.self])
        }
        #expect(ConfigFileError.unknownKey(path: "r.conf", line: 2, key: "x", command: "receive").description.contains("r.conf:2"))
    }

    @Test func expandedArgumentsParseAndTheCommandLineWins() throws {
        let path = NSTemporaryDirectory() + "vfio-migrate-config-\(UUID().uuidString).conf"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try """
            listen = 127.0.0.1:7070
            ca = ca.pem
            cert = c.pem
            key = k.pem
            peer-name = src.test
            device = gpu0=sim:state=64K
            peer-timeout = 5
            """.write(toFile: path, atomically: true, encoding: .utf8)
        let expanded = try ConfigExpansion.expand(["receive", "--config", path, "--peer-timeout", "9"], commands: ["receive": Receive.self])
        let receive = try Receive.parse(Array(expanded.dropFirst()))
        #expect(receive.listen == "127.0.0.1:7070")
        #expect(receive.tls.peerName == "src.test")
        #expect(receive.devices.devices == ["gpu0=sim:state=64K"])
        #expect(receive.peerTimeout == 9)
        // Commands without --config, and arguments without it, pass through untouched.
        #expect(try ConfigExpansion.expand(["demo", "--config", path], commands: ["receive": Receive.self]) == ["demo", "--config", path])
        #expect(try ConfigExpansion.expand(["receive", "--listen", "x"], commands: ["receive": Receive.self]) == ["receive", "--listen", "x"])
    }

    @Test func anUnreadableFileIsNamed() {
        do {
            _ = try ConfigFile(path: "/nonexistent/r.conf")
            Issue.record("read a file that does not exist")
        } catch {
            #expect(error.description.hasPrefix("--config /nonexistent/r.conf: cannot read it"), "\(error)")
        }
    }
}

@Suite struct SystemdActivationTests {
    @Test func takesFdThreeWhenPassedToThisProcess() throws {
        #expect(try SystemdActivation.listeningDescriptor(environment: ["LISTEN_FDS": "1", "LISTEN_PID": "42"], pid: 42) == 3)
    }

    @Test func refusesWhatIsNotOneSocketForThisProcess() {
        #expect(throws: SystemdActivation.Failure.notActivated) { try SystemdActivation.listeningDescriptor(environment: [:], pid: 42) }
        #expect(throws: SystemdActivation.Failure.otherProcess(listenPID: "7", ourPID: 42)) {
            try SystemdActivation.listeningDescriptor(environment: ["LISTEN_FDS": "1", "LISTEN_PID": "7"], pid: 42)
        }
        #expect(throws: SystemdActivation.Failure.badCount("2")) {
            try SystemdActivation.listeningDescriptor(environment: ["LISTEN_FDS": "2", "LISTEN_PID": "42"], pid: 42)
        }
    }

    @Test func notifierNeedsAnAbsoluteOrAbstractSocket() {
        #expect(SystemdNotifier(environment: [:]) == nil)
        #expect(SystemdNotifier(environment: ["NOTIFY_SOCKET": "relative/path"]) == nil)
        #expect(SystemdNotifier(environment: ["NOTIFY_SOCKET": "/run/systemd/notify"]) != nil)
        #expect(SystemdNotifier(environment: ["NOTIFY_SOCKET": "@/org/freedesktop/systemd1/notify/1"]) != nil)
    }

    @Test func versionNamesTheReleaseAndTheCommit() {
        let version = VfioMigrate.configuration.version
        #expect(version.hasPrefix("vfio-migrate \(BuildInfo.version) (commit "))
    }
}
