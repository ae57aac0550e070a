import Foundation
import Glibc

/// A child process that inherits chosen descriptors at chosen numbers, as a VMM
/// hands its guest RAM and control socket to `vfio-migrate send` (`--memory
/// fd:3 --control fd:4`). Foundation's `Process` passes only 0–2, so this is
/// posix_spawn with dup2 file actions. stdout and stderr go to files.
public final class InheritingChild {
    public let pid: pid_t
    public let stdoutPath: String
    public let stderrPath: String
    private var exitCode: Int32?

    public struct SpawnError: Error, CustomStringConvertible {
        public let description: String
    }

    /// `inherit`: child descriptor number → this process's descriptor (dup'd, so the caller keeps its own).
    public init(_ executable: String, _ arguments: [String], inherit: [Int32: Int32] = [:], outputPrefix: String) throws(SpawnError) {
        stdoutPath = outputPrefix + ".out"
        stderrPath = outputPrefix + ".err"
        // Above every target number, so no dup2 overwrites a source still to be dup'd.
        var staged: [(target: Int32, source: Int32)] = []
        defer { for s in staged { close(s.source) } }
        for (target, source) in inherit.sorted(by: { $0.key < $1.key }) {
            let copy = fcntl(source, F_DUPFD_CLOEXEC, 100)
            guard copy >= 0 else { throw SpawnError(description: "fd \(source) for the child's fd \(target): \(String(cString: strerror(errno)))") }
            staged.append((target, copy))
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdoutPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        for s in staged { posix_spawn_file_actions_adddup2(&actions, s.source, s.target) }  // dup2 clears close-on-exec
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, nil, argv, environ)
        guard rc == 0 else { throw SpawnError(description: "posix_spawn \(executable): \(String(cString: strerror(rc)))") }
        self.pid = pid
    }

    deinit { if exitCode == nil { kill(pid, SIGKILL); _ = wait(timeout: 5) } }

    /// The exit code (128 + signal when killed by one), waiting at most `timeout`
    /// seconds; then SIGKILL and -1. -2 if someone else reaped the child.
    @discardableResult
    public func wait(timeout: Double) -> Int32 {
        if let exitCode { return exitCode }
        let deadline = Date(timeIntervalSinceNow: timeout)
        var status: Int32 = 0
        var reaped = waitpid(pid, &status, WNOHANG)
        while reaped == 0 || (reaped < 0 && errno == EINTR) {
            if Date() >= deadline {
                kill(pid, SIGKILL)
                waitpid(pid, &status, 0)
                exitCode = -1
                return -1
            }
            usleep(10_000)
            reaped = waitpid(pid, &status, WNOHANG)
        }
        let signal = status & 0x7F
        let code = reaped < 0 ? -2 : signal == 0 ? (status >> 8) & 0xFF : 128 + signal
        exitCode = code
        return code
    }

    public var stdout: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    public var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }
}
