/// `none`, `zlib:1..9`, `auto` (cheap probe, zlib level 1, raw when incompressible).
public enum CompressionPolicy: Sendable, Equatable, CustomStringConvertible {
    case none
    case zlib(level: Int)
    case auto

    public init(parsing text: String) throws(WireError) {
        switch text {
        case "none": self = .none
        case "auto": self = .auto
        default:
            guard text.hasPrefix("zlib:"), let level = Int(text.dropFirst(5)), (1...9).contains(level),
                  text.count == 6 else {
                throw WireError.invalidCompressionPolicy(text)
            }
            self = .zlib(level: level)
        }
    }

    public var description: String {
        switch self {
        case .none: "none"
        case .zlib(let level): "zlib:\(level)"
        case .auto: "auto"
        }
    }
}
