import ArgumentParser
import Logging
import MigrationEngine
import MigrationWire

// Typed option values: a bad value is a usage error (exit 64) at parse time, with
// the accepted values listed, never a crash or a silent default inside `run()`.

extension CompressionPolicy: ExpressibleByArgument {
    public init?(argument: String) { try? self.init(parsing: argument) }
    public static var allValueStrings: [String] { ["none", "zlib:1", "...", "zlib:9", "zstd:-50", "...", "zstd:19", "auto"] }
}

extension DeviceDigestAlgorithm: ExpressibleByArgument {
    public init?(argument: String) {
        switch argument {
        case "xxh3", "xxh3-128": self = .xxh3
        case "sha256": self = .sha256
        default: return nil
        }
    }
    public static var allValueStrings: [String] { ["xxh3", "sha256"] }
}

extension TimeoutAction: ExpressibleByArgument {}
extension StallPolicy: ExpressibleByArgument {}
extension OpenedDevices.DirtyMode: ExpressibleByArgument {}
extension Logger.Level: @retroactive ExpressibleByArgument {}

/// Range checks shared by every command's `validate()`.
enum ArgumentCheck {
    /// A longest wait anybody means: one year. Larger values overflow clock arithmetic.
    static let maxSeconds = 365.0 * 86_400

    static func seconds(_ value: Double?, _ option: String, allowZero: Bool = false) throws {
        guard let value else { return }
        guard value.isFinite, allowZero ? value >= 0 : value > 0, value <= maxSeconds else {
            throw ValidationError("\(option) \(value): expected a number of seconds \(allowZero ? ">= 0" : "> 0") and at most \(Int(maxSeconds))")
        }
    }

    static func milliseconds(_ value: Double, _ option: String, allowZero: Bool = false) throws {
        guard value.isFinite, allowZero ? value >= 0 : value > 0, value <= maxSeconds * 1000 else {
            throw ValidationError("\(option) \(value): expected milliseconds \(allowZero ? ">= 0" : "> 0")")
        }
    }

    static func count(_ value: Int?, _ option: String, in range: ClosedRange<Int>) throws {
        guard let value else { return }
        guard range.contains(value) else {
            throw ValidationError("\(option) \(value): expected \(range.lowerBound)...\(range.upperBound)")
        }
    }
}
