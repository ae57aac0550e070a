import Foundation
import Glibc
import MigrationControl
import TestSupport
import Testing

/// Descriptors from the VMM on the real binary (issue 15 §1): guest memory passed
/// with `add-fd` and the `start` that lets the transport open it; the refusals of
/// `--device NAME=fd:N` (an open VFIO device) and `--iommu fd:N` (its container)
/// before anything starts. No VFIO hardware here: only the refusals of those two
/// run; that a real device descriptor is accepted is not exercised.
@Suite(.serialized)
struct HandedDescriptorProcessTests {
    /// `send --memory fd:guest-ram` on a control socket, its controller connected (greeting read).
    static func controlledSender(_ dir: String, port: UInt16, extra: [String] = []) throws -> (CLIProcess, ControlClient) {
        let sender = try CLIProcess(["send", "--connect", "127.0.0.1:\(port)", "--memory", "fd:guest-ram", "--memory-size", "4M",
                                     "--json", "--workers", "1", "--control", "unix:\(dir)/ctl.sock"]
                                    + CLI.devices + CLI.tls("source", "destination") + extra)
        let client = try ControlSocketProcessTests.connect("\(dir)/ctl.sock", process: sender)
        _ = try client.nextMessage()  // the greeting
        return (sender, client)
    }

    @Test func memoryAddedByNameMigratesByteIdenticalAfterStart() throws {
        let dir = try CLI.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try CLI.makeMemory("\(dir)/src.mem", pages: 1024)
        let (receiver, port) = try CLI.receiver(dir: dir, memory: "4M")
        let (sender, client) = try Self.controlledSender(dir, port: port)
        #expect(try client.execute("start")["error"]?["desc"]?.stringValue?.contains("no descriptor named 'guest-ram'") == true)
        let memory = open("\(dir)/src.mem", O_RDWR | O_CLOEXEC)
        try #require(memory >= 0)
        #expect(try client.execute("add-fd", ["name": .string("guest-ram")], descriptor: memory)["return"] != nil)
        close(memory)
        #expect(try client.execute("start")["return"] != nil)
        #expect(sender.wait(timeout: 60) == 0, "\(sender.stderr)")
        #expect(receiver.wait(timeout: 60) == 0, "\(receiver.stderr)")
        #expect(FileManager.default.contentsEqual(atPath: "\(dir)/src.mem", andPath: "\(dir)/dst.mem"))
    }

    /// Nothing is opened before `start`, so a descriptor of the wrong kind is refused after it, naming it.
    @Test func aNamedPipeIsRefusedAfterStart() throws {
        let dir = try CLI.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (sender, client) = try Self.controlledSender(dir, port: 1)
        var ends: [Int32] = [-1, -1]
        try #require(pipe(&ends) == 0)
        defer { ends.forEach { close($0) } }
        #expect(try client.execute("add-fd", ["name": .string("guest-ram")], descriptor: ends[0])["return"] != nil)
        #expect(try client.execute("start")["return"] != nil)
        #expect(sender.wait(timeout: 30) == 1, "\(sender.stderr)")
        let said = "\(sender.failed ?? [:])"
        #expect(said.contains("fd:guest-ram") && said.contains("a pipe"), "\(said)")
    }

    /// No `start` within --start-timeout: exit 1, nothing started; the wait is the only thing that ran.
    @Test func withoutStartTheWaitEndsNamingTheTimeout() throws {
        let dir = try CLI.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (sender, _) = try Self.controlledSender(dir, port: 1, extra: ["--start-timeout", "0.5"])
        #expect(sender.wait(timeout: 30) == 1, "\(sender.stderr)")
        let failed = sender.failed ?? [:]
        #expect((failed["message"] as? String)?.contains("no start on the control socket within 0.5 s") == true, "\(failed)")
        #expect(failed["disposition"] as? String == "notStarted", "\(failed)")
    }

    /// Nothing listens on port 1: a refusal must come before the connection is tried.
    func expectRefused(_ arguments: [String], redirections: String, exitCode: Int32 = 1, _ words: [String]) throws {
        let dir = try CLI.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try CLI.makeMemory("\(dir)/src.mem", pages: 64)
        let sender = try CLIProcess(["send", "--connect", "127.0.0.1:1", "--json"] + arguments + CLI.tls("source", "destination"),
                                    redirections: redirections.replacingOccurrences(of: "DIR", with: dir))
        #expect(sender.wait(timeout: 30) == exitCode, "\(sender.stderr)")
        let said = sender.stderr + "\(sender.events)"
        for word in words { #expect(said.contains(word), "\(word) in: \(said)") }
        #expect(!said.contains("ECONNREFUSED"), "refused before connecting: \(said)")
    }

    static let vfioDevice = ["--device", "gpu0=fd:3", "--dirty", "none"]

    @Test(arguments: [
        ("3<&-", ["fd:3", "not open"]),
        ("3<>DIR/src.mem", ["device gpu0 fd:3", "a regular file", "not a VFIO device"]),
        ("3<>/dev/null", ["device gpu0 fd:3", "a character device (/dev/null)", "not a VFIO device"]),
        ("3</dev/null", ["not a VFIO device"]),
    ])
    func aDeviceDescriptorThatIsNotAVFIODeviceIsRefused(redirections: String, words: [String]) throws {
        try expectRefused(Self.vfioDevice, redirections: redirections, words)
    }

    /// fd 1 is the pipe this test reads the child's stdout from.
    @Test func aPipeIsNotAVFIODevice() throws {
        try expectRefused(["--device", "gpu0=fd:1", "--dirty", "none"], redirections: "", ["device gpu0 fd:1", "a pipe", "not a VFIO device"])
    }

    static let iommu = CLI.devices + ["--dirty", "iommu", "--iommu", "fd:3"]

    @Test(arguments: [
        ("3<&-", ["--iommu fd:3", "not open"]),
        ("3<>DIR/src.mem", ["--iommu fd:3", "a regular file", "not a VFIO container"]),
        ("3<>/dev/null", ["--iommu fd:3", "a character device (/dev/null)", "not a VFIO container"]),
    ])
    func aContainerDescriptorThatIsNotAContainerIsRefused(redirections: String, words: [String]) throws {
        try expectRefused(Self.iommu, redirections: redirections, words)
    }

    @Test func iommuWithoutDirtyIommuIsAUsageError() throws {
        try expectRefused(CLI.devices + ["--iommu", "fd:3"], redirections: "", exitCode: 64, ["--iommu fd:3 applies to --dirty iommu only"])
    }

    @Test func aNameWithoutAControlSocketIsAUsageError() throws {
        try expectRefused(["--device", "gpu0=fd:gpu0"], redirections: "", exitCode: 64, ["fd:gpu0", "needs --control"])
    }
}
