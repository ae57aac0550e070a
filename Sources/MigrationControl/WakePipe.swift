import Glibc

/// Wakes the server thread out of `poll` (an event to push, shutdown): a
/// non-blocking pipe, written by any thread, drained by the server thread.
final class WakePipe: Sendable {
    let readEnd: Int32
    private let writeEnd: Int32

    init() throws(ControlError) {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw .systemCall(operation: "pipe", errno: errno) }
        for fd in fds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        readEnd = fds[0]
        writeEnd = fds[1]
    }

    /// A full pipe already means "wake up": EAGAIN is fine.
    func signal() {
        var one: UInt8 = 1
        _ = write(writeEnd, &one, 1)
    }

    func drain() {
        var sink = [UInt8](repeating: 0, count: 256)
        while read(readEnd, &sink, sink.count) > 0 {}
    }

    /// Closed only when no thread can signal any more (a closed number could be reused).
    deinit {
        _ = Glibc.close(readEnd)
        _ = Glibc.close(writeEnd)
    }
}
