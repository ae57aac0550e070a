import Glibc
import SyncPrimitives

/// The other end of the control socket: what a VMM or orchestrator does, for the
/// tests and the test VMM. Blocking, one thread; replies are told apart from
/// events, which are kept in `events` in arrival order.
public final class ControlClient {
    public let fd: Int32
    private var input: [UInt8] = []
    public private(set) var events: [JSONValue] = []

    /// Connects to `unix:PATH`.
    public init(path: String) throws(ControlError) {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .systemCall(operation: "socket", errno: errno) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { dst in
            for (i, byte) in path.utf8.prefix(dst.count - 1).enumerated() { dst[i] = byte }
        }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            let err = errno
            Glibc.close(fd)
            throw .systemCall(operation: "connect \(path)", errno: err)
        }
        self.fd = fd
    }

    /// Adopts a connected socket (one end of a socketpair).
    public init(connected fd: Int32) { self.fd = fd }

    deinit { Glibc.close(fd) }

    /// Sends raw bytes, with `descriptor` attached by SCM_RIGHTS when given.
    public func send(raw bytes: [UInt8], descriptor: Int32? = nil) throws(ControlError) {
        var rest = bytes
        var attach = descriptor.map { [$0] } ?? []
        while !rest.isEmpty {
            let n = try DescriptorPassing.send(rest, descriptors: attach, on: fd)
            rest.removeFirst(n)
            attach = []  // the descriptor went with the first byte
        }
    }

    /// Sends one command; returns its reply (`{"return": …}` or `{"error": …}`).
    public func execute(_ command: String, _ arguments: [String: JSONValue]? = nil, id: JSONValue? = nil,
                        descriptor: Int32? = nil, timeoutSeconds: Double = 10) throws(ControlError) -> JSONValue {
        var request: [String: JSONValue] = ["execute": .string(command)]
        if let arguments { request["arguments"] = .object(arguments) }
        if let id { request["id"] = id }
        try send(raw: Array((JSONValue.object(request).jsonLine + "\n").utf8), descriptor: descriptor)
        return try nextReply(timeoutSeconds: timeoutSeconds)
    }

    /// The next line that is not an event (events are collected on the way).
    public func nextReply(timeoutSeconds: Double = 10) throws(ControlError) -> JSONValue {
        while true {
            let message = try nextMessage(timeoutSeconds: timeoutSeconds)
            if message["event"] != nil { events.append(message) } else { return message }
        }
    }

    /// The next event named `name`, from those already collected or still to come.
    public func nextEvent(named name: String, timeoutSeconds: Double = 10) throws(ControlError) -> JSONValue {
        if let i = events.firstIndex(where: { $0["event"] == .string(name) }) { return events.remove(at: i) }
        while true {
            let message = try nextMessage(timeoutSeconds: timeoutSeconds)
            if message["event"] == .string(name) { return message }
            if message["event"] != nil { events.append(message) }
        }
    }

    /// The next line of any kind; `.serverClosed` at end of stream.
    public func nextMessage(timeoutSeconds: Double = 10) throws(ControlError) -> JSONValue {
        let deadline = monotonicSeconds() + timeoutSeconds
        while true {
            if let newline = input.firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(input[..<newline])
                input.removeSubrange(...newline)
                return try JSONValue.parse(line)
            }
            try fill(until: deadline)
        }
    }

    private func fill(until deadline: Double) throws(ControlError) {
        let left = deadline - monotonicSeconds()
        guard left > 0 else { throw .systemCall(operation: "read reply", errno: ETIMEDOUT) }
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, Int32(left * 1000) + 1) > 0 else { return }
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        let n = read(fd, &chunk, chunk.count)
        if n < 0, errno == EINTR { return }
        guard n > 0 else { throw .serverClosed }
        input += chunk.prefix(n)
    }
}
