import Foundation
import Glibc
import Testing

/// examples/vmm-handoff.sh as shipped, on the binary built next to this bundle:
/// two network namespaces, a toy VMM on each side (inherited memfd, SCM_RIGHTS,
/// start, dirty-sync, stop-guest), byte-identical at the end. Needs root, `ip`
/// and python3; otherwise skipped, saying so.
@Suite(.serialized)
struct ExampleScriptTests {
    static var canRun: Bool {
        getuid() == 0 && ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"].contains { FileManager.default.isExecutableFile(atPath: $0) }
            && FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")
    }

    @Test(.enabled(if: canRun, "needs root, ip (netns) and /usr/bin/python3"))
    func vmmHandoffEndsByteIdentical() throws {
        let script = Process()
        script.executableURL = URL(fileURLWithPath: "/bin/bash")
        script.arguments = ["\(TwoProcessTests.root)/examples/vmm-handoff.sh"]
        script.environment = ProcessInfo.processInfo.environment.merging(["VFIO_MIGRATE": TwoProcessTests.binary]) { $1 }
        let out = Pipe(), err = Pipe()
        script.standardOutput = out
        script.standardError = err
        try script.run()
        let (code, stdout, stderr) = ChildOutput(stdout: out, stderr: err).wait(for: script)
        let said = String(decoding: stdout, as: UTF8.self) + String(decoding: stderr, as: UTF8.self)
        #expect(code == 0, "\(said)")
        #expect(said.contains("guest memory (written by the guest during pre-copy) and device state identical"), "\(said)")
        #expect(["dirty-synced", "guest-stopped", "guest-started"].allSatisfy { said.contains($0) }, "the VMM answered each request: \(said)")
    }
}
