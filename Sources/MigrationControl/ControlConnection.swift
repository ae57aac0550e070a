import Glibc
import SyncPrimitives

/// One connected controller, owned by the server thread: its input split into
/// bounded lines, the descriptors that came with them, and the bytes still to
/// send. Writes never block: output waits here until the socket takes it.
final class ControlConnection {
    /// What arrived with a message: a descriptor, or the fact that some were dropped.
    enum Attachment { case descriptor(Int32), truncated }

    let fd: Int32
    let peer: PeerCredentials
    private var framer: LineFramer
    /// Attachments by the stream offset of the last byte received with them. The
    /// kernel ends a read with the message that carried descriptors (earlier
    /// messages may be glued in front of it), so that last byte lies in the
    /// sender's own message: the line holding it is the one the descriptors came with.
    private var attachments: [(offset: Int, attachment: Attachment)] = []
    private var receivedBytes = 0
    private var output: [UInt8] = []
    private let maxOutputBytes: Int

    init(fd: Int32, peer: PeerCredentials, maxLineBytes: Int, maxOutputBytes: Int) {
        self.fd = fd
        self.peer = peer
        self.framer = LineFramer(limit: maxLineBytes)
        self.maxOutputBytes = maxOutputBytes
    }

    var wantsToWrite: Bool { !output.isEmpty }
    /// Output was refused for lack of room: the controller does not read what it is sent.
    private(set) var overflowed = false

    /// Queues one JSON line; false when the controller has stopped reading (too much queued).
    func enqueue(_ message: JSONValue) -> Bool { enqueue(line: message.jsonLine) }

    func enqueue(line: String) -> Bool {
        guard output.count + line.utf8.count < maxOutputBytes else { overflowed = true; return false }
        output += Array(line.utf8) + [UInt8(ascii: "\n")]
        return true
    }

    /// Reads what is available and runs every complete line through `execute`,
    /// queueing its reply. Returns false at end of stream.
    func readAvailable(_ execute: (_ line: [UInt8], _ descriptors: inout [Int32]) -> JSONValue) throws(ControlError) -> Bool {
        while let received = try DescriptorPassing.receive(from: fd, maxBytes: 16 * 1024) {
            if received.bytes.isEmpty { return false }
            receivedBytes += received.bytes.count
            for descriptor in received.descriptors { attachments.append((receivedBytes - 1, .descriptor(descriptor))) }
            if received.truncated { attachments.append((receivedBytes - 1, .truncated)) }
            for item in framer.append(received.bytes) { handle(item, execute) }
            closeAttachments(before: framer.consumedOffset)  // bytes of a discarded line
        }
        return true
    }

    private func handle(_ item: LineFramer.Item, _ execute: (_ line: [UInt8], _ descriptors: inout [Int32]) -> JSONValue) {
        switch item {
        case .oversized:
            _ = enqueue(ControlMessage.error(.lineTooLong(limit: framer.limit), id: nil))
        case .line(let bytes, let range):
            let attached = takeAttachments(before: range.upperBound)
            if bytes.isEmpty { close(attached); return }  // blank lines are tolerated, as in QMP
            if attached.contains(where: { if case .truncated = $0 { true } else { false } }) {
                close(attached)
                _ = enqueue(ControlMessage.error(.descriptorsTruncated, id: ControlRequest.bestEffortID(of: bytes)))
                return
            }
            var descriptors = attached.compactMap { if case .descriptor(let fd) = $0 { fd } else { nil } }
            let reply = execute(bytes, &descriptors)
            descriptors.forEach { _ = Glibc.close($0) }  // the ones the command did not keep
            _ = enqueue(reply)
        }
    }

    private func takeAttachments(before offset: Int) -> [Attachment] {
        let (taken, kept) = (attachments.filter { $0.offset < offset }, attachments.filter { $0.offset >= offset })
        attachments = kept
        return taken.map(\.attachment)
    }

    private func closeAttachments(before offset: Int) { close(takeAttachments(before: offset)) }

    private func close(_ attached: [Attachment]) {
        for case .descriptor(let fd) in attached { _ = Glibc.close(fd) }
    }

    /// Sends what the socket takes now. Throws when the peer is gone.
    func flush() throws(ControlError) {
        while !output.isEmpty {
            let n = output.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT)) }
            if n < 0 {
                let err = errno
                if err == EAGAIN || err == EWOULDBLOCK || err == EINTR { return }
                throw .systemCall(operation: "send", errno: err)
            }
            output.removeFirst(n)
        }
    }

    /// Best effort before closing: the last events (finished, failed) should arrive.
    func flush(until deadline: Double) {
        while wantsToWrite, monotonicSeconds() < deadline {
            do { try flush() } catch { return }
            if wantsToWrite {
                var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                _ = poll(&p, 1, 50)
            }
        }
    }

    func close() {
        closeAttachments(before: Int.max)
        _ = Glibc.close(fd)
    }
}
