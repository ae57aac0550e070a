import Glibc
import SyncPrimitives

/// How the CLI names a descriptor: `fd:3` is inherited at exec, `fd:memory` was
/// passed over the control socket with `add-fd`. Names start with a letter, so
/// the two can never be confused.
public enum DescriptorReference: Sendable, Equatable {
    case inherited(Int32)
    case named(String)

    /// nil when `text` is not an `fd:` form at all (a path, `vfio:...`).
    public init?(parsing text: String) throws(ControlError) {
        guard text.hasPrefix("fd:") else { return nil }
        let rest = String(text.dropFirst(3))
        if let number = Int32(rest) {
            guard number >= 0 else { throw .invalidDescriptorName(rest, reason: "a descriptor number is 0 or more") }
            self = .inherited(number)
        } else {
            try DescriptorTable.checkName(rest)
            self = .named(rest)
        }
    }
}

/// Descriptors handed over with `add-fd`, by name. The table owns them until
/// the CLI takes one (`take`) or the server shuts down (`closeAll`).
public final class DescriptorTable: Sendable {
    static let maxNameBytes = 64
    private let entries = LockedValue<[String: Int32]>([:])

    public init() {}

    static func checkName(_ name: String) throws(ControlError) {
        guard !name.isEmpty, name.utf8.count <= maxNameBytes else {
            throw .invalidDescriptorName(name, reason: "must be 1 to \(maxNameBytes) bytes")
        }
        guard let first = name.unicodeScalars.first, first.isASCII, first.properties.isAlphabetic else {
            throw .invalidDescriptorName(name, reason: "must start with a letter (fd:N means an inherited number)")
        }
        let allowed = name.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "._-".unicodeScalars.contains($0)) }
        guard allowed else { throw .invalidDescriptorName(name, reason: "only letters, digits, '.', '_' and '-'") }
    }

    /// Takes ownership of `descriptor` on success only (the caller closes it on a throw).
    func register(_ descriptor: Int32, as name: String) throws(ControlError) {
        try Self.checkName(name)
        try entries.withLock { (table: inout [String: Int32]) throws(ControlError) in
            guard table[name] == nil else { throw .descriptorNameInUse(name) }
            table[name] = descriptor
        }
    }

    /// Borrows: the table still owns (and will close) the descriptor.
    public func descriptor(named name: String) -> Int32? { entries.withLock { $0[name] } }

    /// Hands the descriptor over: the caller owns and closes it from now on.
    public func take(named name: String) throws(ControlError) -> Int32 {
        guard let fd = entries.withLock({ $0.removeValue(forKey: name) }) else { throw .unknownDescriptor(name) }
        return fd
    }

    public var names: [String] { entries.withLock { $0.keys.sorted() } }

    func closeAll() {
        let all = entries.withLock { table in defer { table.removeAll() }; return Array(table.values) }
        for fd in all { close(fd) }
    }
}
