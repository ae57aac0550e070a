import MigrationControl
import TestSupport
import Testing
@testable import vfio_migrate

/// docs/EVENTS.md's event table and the code name the same events: every `--json`
/// event (`EventName`) and every request to the VMM has a row, and every row is
/// one of them. (The fields of each are checked on a real run by EventSchemaTests.)
@Suite struct EventNameDocumentation {
    @Test func theEventTableListsExactlyTheEventsTheCodeKnows() throws {
        let documented = Set(try EventSchema.load().rows.keys)
        let known = Set(EventName.allCases.map(\.rawValue) + VMMRequest.allCases.map(\.rawValue))
        #expect(!documented.isEmpty, "no event table found in docs/EVENTS.md")
        #expect(known.subtracting(documented).isEmpty, "events the code emits without a row: \(known.subtracting(documented).sorted())")
        #expect(documented.subtracting(known).isEmpty, "rows for events the code does not know: \(documented.subtracting(known).sorted())")
    }

    @Test func tableCellsParseIntoFieldsAndOptionalFields() {
        let schema = EventSchema(markdown: """
            ## Events
            | event | channels | fields | when known | meaning |
            |---|---|---|---|---|
            | `x` | both | `a`, `b` | `c` | Meaning with `code`. |
            ## Next
            | `y` | both | `a` | | |
            """)
        #expect(schema.rows.keys.sorted() == ["x"])
        #expect(schema.rows["x"]?.fields == ["a", "b"] && schema.rows["x"]?.optional == ["c"])
        #expect(schema.problems(event: "x", fields: ["a", "b", "c", "side", "timestamp"]).isEmpty)
        #expect(schema.problems(event: "x", fields: ["a", "d"]) == ["event x lacks field b, which docs/EVENTS.md lists",
                                                                     "event x has field d, which docs/EVENTS.md does not list"])
        #expect(schema.problems(event: "y", fields: []) == ["event y has no row in docs/EVENTS.md"])
    }
}
