import Foundation
import Glibc
import TestSupport
import Testing

/// `send --memory fd:N` on the real binary, the descriptor inherited through a
/// shell redirection as a VMM would pass it (issue 15 §1): a migration from it,
/// and each refusal before anything starts (exit 1, the descriptor named).
@Suite(.serialized)
struct MemoryDescriptorProcessTests {
    static func send(dir: String, port: UInt16, memory: String, redirections: String, extra: [String] = []) throws -> CLIProcess {
        try CLIProcess(["send", "--connect", "127.0.0.1:\(port)", "--memory", memory, "--json", "--workers", "1"]
                       + CLI.devices + CLI.tls("source", "destination") + extra, redirections: redirections)
    }

    @Test func anInheritedDescriptorMigratesByteIdentical() throws {
        let dir = try CLI.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try CLI.makeMemory("\(dir)/src.mem", pages: 1024)
        let (receiver, port) = try CLI.receiver(dir: dir, memory: "4M")
        let sender = try Self.send(dir: dir, port: port, memory: "fd:3", redirections: "3<>\(dir)/src.mem", extra: ["--memory-size", "4M"])
        #expect(sender.wait(timeout: 60) == 0, "\(sender.stderr)")
        #expect(receiver.wait(timeout: 60) == 0, "\(receiver.stderr)")
        #expect(FileManager.default.contentsEqual(atPath: "\(dir)/src.mem", andPath: "\(dir)/dst.mem"))
    }

    /// Nothing listens on port 1 (exit 1: not started; 64: a usage error): a refusal must come before the connection is tried.
    func expectRefused(memory: String, redirections: String, extra: [String] = [], exitCode: Int32 = 1, _ words: [String]) throws {
        let dir = try CLI.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try CLI.makeMemory("\(dir)/src.mem", pages: 1024)
        let sender = try Self.send(dir: dir, port: 1, memory: memory, redirections: redirections.replacingOccurrences(of: "DIR", with: dir), extra: extra)
        #expect(sender.wait(timeout: 30) == exitCode, "\(sender.stderr)")
        let said = sender.stderr + "\(sender.events)"
        for word in words { #expect(said.contains(word), "\(word) in: \(said)") }
        #expect(!said.contains("ECONNREFUSED"), "refused before connecting: \(said)")
    }

    @Test func aClosedDescriptorIsRefused() throws {
        try expectRefused(memory: "fd:3", redirections: "3<&-", ["fd:3", "not open"])
    }

    @Test func aReadOnlyDescriptorIsRefused() throws {
        try expectRefused(memory: "fd:3", redirections: "3<DIR/src.mem", ["fd:3", "read-only"])
    }

    @Test func aDescriptorOfAnotherSizeIsRefused() throws {
        try expectRefused(memory: "fd:3", redirections: "3<>DIR/src.mem", extra: ["--memory-size", "8M"], ["fd:3", "4194304 bytes", "--memory-size"])
    }

    /// fd 1 is the pipe this test reads the child's stdout from.
    @Test func aPipeIsRefused() throws {
        try expectRefused(memory: "fd:1", redirections: "", ["fd:1", "a pipe"])
    }

    /// A name can only come over the control socket.
    @Test func aDescriptorByNameNeedsAControlSocket() throws {
        try expectRefused(memory: "fd:guest-ram", redirections: "", exitCode: 64, ["fd:guest-ram", "add-fd", "needs --control"])
    }
}
