/// `none`, `zlib:1..9`, `zstd:N` (N in `zstdLevels`, not 0), `auto` (zero pages as
/// flags, random-looking data raw, the rest raw or compressed as the engine chooses).
public enum CompressionPolicy: Sendable, Equatable, CustomStringConvertible {
    case none
    case zlib(level: Int)
    /// zstd when the destination accepts it, else raw DEFLATE (the mandatory baseline).
    case zstd(level: Int)
    case auto

    public init(parsing text: String) throws(WireError) {
        switch text {
        case "none": self = .none
        case "auto": self = .auto
        default:
            if text.hasPrefix("zlib:"), let level = Int(text.dropFirst(5)), (1...9).contains(level), text.count == 6 {
                self = .zlib(level: level)
            } else if text.hasPrefix("zstd:"), let level = Int(text.dropFirst(5)), zstdLevels.contains(level), level != 0,
                      String(level) == text.dropFirst(5) {
                self = .zstd(level: level)
            } else {
                throw WireError.invalidCompressionPolicy(text)
            }
        }
    }

    public var description: String {
        switch self {
        case .none: "none"
        case .zlib(let level): "zlib:\(level)"
        case .zstd(let level): "zstd:\(level)"
        case .auto: "auto"
        }
    }

    /// The encodings a source with this policy may use (its HELLO lists those of
    /// them the destination accepts): zstd falls back to deflate without it.
    public var encodings: [Encoding] {
        switch self {
        case .none: [.raw]
        case .zlib: [.raw, .deflate]
        case .zstd, .auto: [.raw, .deflate, .zstd]
        }
    }
}

/// One codec at one level: what a compressed payload is made with.
public enum PayloadCodec: Hashable, Sendable, CustomStringConvertible {
    /// Raw DEFLATE; `zlib` picks zlib's implementation (the `zlib:N` policy), else libdeflate.
    case deflate(level: Int, zlib: Bool = false)
    case zstd(level: Int)

    public var description: String {
        switch self {
        case .deflate(let level, let zlib): zlib ? "zlib:\(level)" : "deflate:\(level)"
        case .zstd(let level): "zstd:\(level)"
        }
    }

    var encoding: Encoding {
        switch self {
        case .deflate: .deflate
        case .zstd: .zstd
        }
    }
}
