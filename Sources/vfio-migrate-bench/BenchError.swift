import Foundation
import SystemErrno
import SystemPackage

/// Why a bench invocation (or one of its baseline processes) could not run.
/// A migration that runs but fails is not an error: its row says so.
enum BenchError: Error, CustomStringConvertible {
    /// The sibling `vfio-migrate` binary is not next to this one.
    case migrateBinaryMissing(path: String)
    case certificateMissing(path: String)
    case cannotCreate(path: String)
    case cannotOpen(path: String)
    /// A child exited before writing its port file.
    case childExitedEarly(name: String, status: Int32, stderr: String)
    case portFileTimeout(name: String, path: String, seconds: Int)
    /// A socket call of the plain-TCP baseline failed.
    case socket(call: String, errno: Errno)
    case notTCPListener
    /// A helper command (ip, tc, openssl) failed; `status` -1: it could not start.
    case commandFailed(command: [String], status: Int32, stderr: String)
    /// A QMP command to a QEMU reference process failed or went unanswered.
    case qmp(process: String, command: String, detail: String)

    var description: String {
        switch self {
        case .migrateBinaryMissing(let path):
            return "\(path) is missing: the bench runs the vfio-migrate binary next to its own; build both with swift build -c release"
        case .certificateMissing(let path):
            return "\(path) is missing: run from the repository root or pass --certs DIR"
        case .cannotCreate(let path): return "cannot create \(path)"
        case .cannotOpen(let path): return "cannot open \(path)"
        case .childExitedEarly(let name, let status, let stderr):
            return "\(name) exited with status \(status) before listening: \(stderr.suffix(400))"
        case .portFileTimeout(let name, let path, let seconds):
            return "\(name) did not write its port file \(path) within \(seconds) s"
        case .socket(let call, let code): return "\(call): \(code.explanation)"
        case .notTCPListener: return "the baseline listener is not a TCP listener"
        case .qmp(let process, let command, let detail): return "QMP \(command) to \(process): \(detail)"
        case .commandFailed(let command, let status, let stderr):
            return "\(command.joined(separator: " ")) failed (status \(status)): \(stderr.trimmingCharacters(in: .whitespacesAndNewlines).suffix(400))"
        }
    }
}
