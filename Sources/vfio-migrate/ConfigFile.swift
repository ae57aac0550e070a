import ArgumentParser
import Foundation

/// `--config FILE`: one `key = value` per line, the keys being the command's long
/// option names without `--` (`peer-name = src.example.net`, `device = gpu0=vfio:12/0000:3b:00.0`).
/// Flags take `true` or `false`; repeatable options may appear on several lines;
/// lines starting with `#` are comments. An option given on the command line
/// replaces every value the file gives for it.
struct ConfigFile: Equatable {
    struct Entry: Equatable { let key: String, value: String, line: Int }
    let path: String
    let entries: [Entry]

    init(path: String) throws(ConfigFileError) {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw .unreadable(path: path, reason: (error as NSError).localizedFailureReason ?? "\(error)")
        }
        try self.init(text: text, path: path)
    }

    init(text: String, path: String) throws(ConfigFileError) {
        var entries: [Entry] = []
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let eq = line.firstIndex(of: "=") else { throw .malformed(path: path, line: index + 1, text: line) }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces)
            var value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
            guard !key.isEmpty, !key.hasPrefix("-") else { throw .malformed(path: path, line: index + 1, text: line) }
            entries.append(Entry(key: key, value: value, line: index + 1))
        }
        self.path = path
        self.entries = entries
    }

    /// The file as command-line arguments for a command whose long options are `options`,
    /// leaving out every option in `givenOnCommandLine`.
    func arguments(for options: OptionTable, command: String, givenOnCommandLine: Set<String>) throws(ConfigFileError) -> [String] {
        var result: [String] = []
        var seen: Set<String> = []
        for e in entries {
            guard e.key != "config" else { throw .nested(path: path, line: e.line) }
            guard let kind = options.kinds[e.key] else { throw .unknownKey(path: path, line: e.line, key: e.key, command: command) }
            guard kind == .repeatingOption || seen.insert(e.key).inserted else { throw .repeated(path: path, line: e.line, key: e.key) }
            if givenOnCommandLine.contains(e.key) { continue }
            switch kind {
            case .flag:
                guard let on = Self.flagValue(e.value) else { throw .notAFlagValue(path: path, line: e.line, key: e.key, value: e.value) }
                if on { result.append("--\(e.key)") }
            case .option, .repeatingOption:
                result += ["--\(e.key)", e.value]
            }
        }
        return result
    }

    static func flagValue(_ text: String) -> Bool? {
        switch text.lowercased() {
        case "true", "yes", "on", "1": return true
        case "false", "no", "off", "0": return false
        default: return nil
        }
    }
}

enum ConfigFileError: Error, Equatable, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    case malformed(path: String, line: Int, text: String)
    case unknownKey(path: String, line: Int, key: String, command: String)
    case repeated(path: String, line: Int, key: String)
    case notAFlagValue(path: String, line: Int, key: String, value: String)
    case nested(path: String, line: Int)
    case configGivenTwice

    var description: String {
        switch self {
        case let .unreadable(path, reason): return "--config \(path): cannot read it: \(reason)"
        case let .malformed(path, line, text): return "\(path):\(line): expected 'key = value' (a long option name without --), found '\(text)'"
        case let .unknownKey(path, line, key, command): return "\(path):\(line): '\(key)' is not an option of \(command) (see vfio-migrate \(command) --help)"
        case let .repeated(path, line, key): return "\(path):\(line): '\(key)' is given twice and takes one value"
        case let .notAFlagValue(path, line, key, value): return "\(path):\(line): '\(key)' is a flag: expected true or false, found '\(value)'"
        case let .nested(path, line): return "\(path):\(line): a configuration file cannot name another (config)"
        case .configGivenTwice: return "--config is given twice; name one file"
        }
    }
}

/// A command's long options and how each takes values, read from the command's own
/// definitions (the JSON `--experimental-dump-help` prints), so the file's keys
/// cannot drift from the options.
struct OptionTable: Equatable {
    enum Kind: Equatable { case flag, option, repeatingOption }
    let kinds: [String: Kind]

    init(kinds: [String: Kind]) { self.kinds = kinds }

    init(command: any ParsableCommand.Type) {
        struct Dump: Decodable { let command: Command }
        struct Command: Decodable { let arguments: [Argument]? }
        struct Argument: Decodable { let kind: String, isRepeating: Bool, names: [Name]? }
        struct Name: Decodable { let kind: String, name: String }
        let dump = try? JSONDecoder().decode(Dump.self, from: Data(command._dumpHelp().utf8))
        var kinds: [String: Kind] = [:]
        for a in dump?.command.arguments ?? [] {
            let kind: Kind? = a.kind == "flag" ? .flag : a.kind == "option" ? (a.isRepeating ? .repeatingOption : .option) : nil
            for n in a.names ?? [] where n.kind == "long" && n.name != "help" { kinds[n.name] = kind }
        }
        self.kinds = kinds
    }
}

/// Applies `--config FILE` before ArgumentParser sees the arguments: the file's
/// options go right after the subcommand, then the command line's.
enum ConfigExpansion {
    /// `arguments` without the program name. Unchanged when the subcommand is not in
    /// `commands` or there is no `--config`.
    static func expand(_ arguments: [String], commands: [String: any ParsableCommand.Type]) throws(ConfigFileError) -> [String] {
        guard let name = arguments.first, let command = commands[name] else { return arguments }
        let rest = Array(arguments.dropFirst())
        let given = longOptionsGiven(rest)
        let paths = configPaths(rest)
        guard paths.count <= 1 else { throw .configGivenTwice }
        guard let path = paths.first else { return arguments }
        let file = try ConfigFile(path: path)
        let fromFile = try file.arguments(for: OptionTable(command: command), command: name, givenOnCommandLine: given)
        return [name] + fromFile + rest
    }

    /// Long option names on the command line (`--name` and `--name=value`), up to `--`.
    static func longOptionsGiven(_ arguments: [String]) -> Set<String> {
        var names: Set<String> = []
        for a in arguments {
            if a == "--" { break }
            guard a.hasPrefix("--") else { continue }
            names.insert(String(a.dropFirst(2).prefix { $0 != "=" }))
        }
        return names
    }

    static func configPaths(_ arguments: [String]) -> [String] {
        var paths: [String] = []
        var i = arguments.startIndex
        while i < arguments.endIndex, arguments[i] != "--" {
            let a = arguments[i]
            if a == "--config", i + 1 < arguments.endIndex { paths.append(arguments[i + 1]); i += 1 }
            else if a.hasPrefix("--config=") { paths.append(String(a.dropFirst("--config=".count))) }
            i += 1
        }
        return paths
    }
}

/// `--config FILE` as every command that reads one declares it (for --help and the manual;
/// the file itself is applied by `ConfigExpansion` before parsing).
struct ConfigOption: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Read options from FILE: 'key = value' lines, keys the long option names without --, flags true/false, '#' comments. Options on the command line win.",
        valueName: "file"))
    var config: String?
}
