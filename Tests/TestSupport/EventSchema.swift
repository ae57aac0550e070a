import Foundation

/// docs/EVENTS.md's event table, parsed: the schema the `--json` lines and the
/// control socket's events are checked against. A row is
/// `| `name` | channels | `field`, … | `optional`, … | meaning |`.
public struct EventSchema: Sendable {
    public struct Row: Sendable {
        public let name: String
        public let fields: [String]
        public let optional: [String]
    }

    /// Members of every `--json` line besides the event's own fields.
    public static let envelope: Set<String> = ["event", "side", "timestamp"]
    public let rows: [String: Row]

    public init(markdown: String) {
        var rows: [String: Row] = [:]
        for line in Self.section("## Events", of: markdown) where line.hasPrefix("| `") {
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
            guard cells.count >= 6, let name = Self.codeSpans(cells[1]).first else { continue }
            rows[name] = Row(name: name, fields: Self.codeSpans(cells[3]), optional: Self.codeSpans(cells[4]))
        }
        self.rows = rows
    }

    /// The repository's docs/EVENTS.md.
    public static func load(file: String = #filePath) throws -> EventSchema {
        let root = URL(fileURLWithPath: file).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return EventSchema(markdown: try String(contentsOf: root.appendingPathComponent("docs/EVENTS.md"), encoding: .utf8))
    }

    /// What is wrong with one emitted event (empty: it matches its row).
    public func problems(event name: String, fields: Set<String>) -> [String] {
        guard let row = rows[name] else { return ["event \(name) has no row in docs/EVENTS.md"] }
        let missing = row.fields.filter { !fields.contains($0) }
        let unknown = fields.subtracting(row.fields).subtracting(row.optional).subtracting(Self.envelope)
        return missing.map { "event \(name) lacks field \($0), which docs/EVENTS.md lists" }
            + unknown.sorted().map { "event \(name) has field \($0), which docs/EVENTS.md does not list" }
    }

    /// The lines from `heading` to the next heading of the same level.
    static func section(_ heading: String, of text: String) -> [Substring] {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard let start = lines.firstIndex(where: { $0 == heading }) else { return [] }
        let rest = lines[(start + 1)...]
        let end = rest.firstIndex { $0.hasPrefix("## ") } ?? rest.endIndex
        return Array(rest[..<end])
    }

    /// `a`, `b` → ["a", "b"].
    static func codeSpans(_ cell: String) -> [String] {
        cell.split(separator: "`", omittingEmptySubsequences: false).enumerated().compactMap { $0.offset % 2 == 1 ? String($0.element) : nil }
    }
}
