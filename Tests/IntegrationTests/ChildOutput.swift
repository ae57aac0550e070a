import Foundation

/// Both output pipes of a child process, drained concurrently from the start: reading
/// one to its end before the other deadlocks once the child fills the other pipe
/// (64 KiB) and blocks writing it, e.g. a chatty stderr while stdout is still open.
final class ChildOutput: @unchecked Sendable {
    private let group = DispatchGroup()
    private let lock = NSLock()
    private var out = Data(), err = Data()

    init(stdout: Pipe, stderr: Pipe) {
        drain(stdout) { d in self.lock.lock(); self.out += d; self.lock.unlock() }
        drain(stderr) { d in self.lock.lock(); self.err += d; self.lock.unlock() }
    }

    private func drain(_ pipe: Pipe, into append: @escaping @Sendable (Data) -> Void) {
        group.enter()
        Thread { [group] in
            append(pipe.fileHandleForReading.readDataToEndOfFile())
            group.leave()
        }.start()
    }

    /// Waits for both pipes to reach end of file (a child not started by `Process`).
    func drained() -> (out: Data, err: Data) {
        group.wait()
        lock.lock(); defer { lock.unlock() }
        return (out, err)
    }

    /// Waits for the child to exit and both pipes to reach end of file.
    func wait(for process: Process) -> (code: Int32, out: Data, err: Data) {
        process.waitUntilExit()
        group.wait()
        lock.lock(); defer { lock.unlock() }
        return (process.terminationStatus, out, err)
    }
}
