import Foundation
import Testing

/// A child that writes more than a pipe holds to stderr before it closes
/// stdout must not deadlock the test that collects both.
struct ChildOutputTests {
    @Test func chattyStderrDoesNotDeadlock() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "head -c 1000000 /dev/zero >&2; echo done"]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let (code, o, e) = ChildOutput(stdout: out, stderr: err).wait(for: p)
        #expect(code == 0)
        #expect(String(decoding: o, as: UTF8.self) == "done\n")
        #expect(e.count == 1_000_000)
    }
}
