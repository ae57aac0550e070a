/// Where to listen or connect: `HOST:PORT`, `[V6]:PORT`, or `unix:PATH`.
/// HOST is a name or a numeric address; a listener given `*` listens on every address.
public enum Endpoint: Sendable, Equatable, CustomStringConvertible {
    case tcp(host: String, port: UInt16)
    case unix(path: String)

    /// sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
    static let maxUnixPathBytes = 107

    public init(parsing text: String) throws(TLSError) {
        func bad(_ reason: String) -> TLSError { .invalidEndpoint(text, reason: reason) }
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst(5))
            guard !path.isEmpty else { throw bad("empty socket path") }
            guard path.utf8.count <= Self.maxUnixPathBytes else {
                throw bad("socket path longer than \(Self.maxUnixPathBytes) bytes")
            }
            guard !path.utf8.contains(0) else { throw bad("NUL in socket path") }
            self = .unix(path: path)
            return
        }
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { throw bad("missing ']'") }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { throw bad("missing ':PORT' after ']'") }
            portText = rest.dropFirst()
            guard host.contains(":") else { throw bad("brackets are for IPv6 addresses only") }
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw bad("missing ':PORT'") }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            guard !host.contains(":") else { throw bad("an IPv6 address must be written in brackets, e.g. [::1]:4444") }
        }
        guard !host.isEmpty else { throw bad("empty host") }
        guard !portText.isEmpty, portText.allSatisfy({ $0.isASCII && $0.isNumber }),
              let port = UInt16(portText) else { throw bad("port must be a number 0-65535") }
        self = .tcp(host: String(host), port: port)
    }

    public var description: String {
        switch self {
        case let .tcp(host, port): return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case let .unix(path): return "unix:\(path)"
        }
    }
}
