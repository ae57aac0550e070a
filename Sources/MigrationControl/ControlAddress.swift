/// Where the control socket lives: `unix:PATH` (this process creates it) or
/// `fd:N` (an inherited descriptor: a listening UNIX socket, or one end of a
/// connected pair when the VMM forked the transport itself).
public enum ControlAddress: Sendable, Equatable, CustomStringConvertible {
    case unix(path: String)
    case descriptor(Int32)

    /// sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
    static let maxUnixPathBytes = 107

    public init(parsing text: String) throws(ControlError) {
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst(5))
            guard !path.isEmpty else { throw .invalidAddress(text, reason: "empty socket path") }
            guard path.utf8.count <= Self.maxUnixPathBytes else {
                throw .invalidAddress(text, reason: "socket path longer than \(Self.maxUnixPathBytes) bytes")
            }
            guard !path.utf8.contains(0) else { throw .invalidAddress(text, reason: "NUL in socket path") }
            self = .unix(path: path)
        } else if text.hasPrefix("fd:") {
            guard let fd = Int32(text.dropFirst(3)), fd >= 0 else {
                throw .invalidAddress(text, reason: "expected fd:N with N a descriptor number")
            }
            self = .descriptor(fd)
        } else {
            throw .invalidAddress(text, reason: "expected unix:PATH or fd:N")
        }
    }

    public var description: String {
        switch self {
        case .unix(let path): "unix:\(path)"
        case .descriptor(let fd): "fd:\(fd)"
        }
    }
}
