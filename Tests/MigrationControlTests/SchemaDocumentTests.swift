import Foundation
@testable import MigrationControl
import Testing

/// docs/EVENTS.md is the schema: every command, answer and request the code
/// knows has a heading there, and the limits it states are the code's.
@Suite struct SchemaDocument {
    static let text: String = {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return (try? String(contentsOf: root.appendingPathComponent("docs/EVENTS.md"), encoding: .utf8)) ?? ""
    }()

    static var headings: [String] { text.split(separator: "\n").filter { $0.hasPrefix("#### ") }.map(String.init) }

    @Test func everyCommandHasAHeading() {
        for command in CommandDispatcher.commands {
            #expect(Self.headings.contains { $0.contains("`\(command)`") }, "docs/EVENTS.md lacks command \(command)")
        }
    }

    /// A row of the event table (its fields are checked against a real run by ReliabilityTests' EventSchemaTests).
    @Test func everyRequestToTheVMMHasAnEventRow() {
        for request in VMMRequest.allCases {
            #expect(Self.text.contains("\n| `\(request.rawValue)` | control |"), "docs/EVENTS.md lacks event \(request.rawValue)")
        }
    }

    @Test func theStatedLimitsAreTheCodes() {
        let defaults = ControlServer.Configuration(address: .descriptor(0))
        #expect(Self.text.contains("at most **\(defaults.maxLineBytes) bytes**"))
        #expect(Self.text.contains("\(defaults.maxQueuedOutputBytes >> 20) MiB of replies and events"))
        #expect(Self.text.contains("more than \(DescriptorPassing.maxDescriptorsPerMessage) in one message"))
        #expect(Self.text.contains("1–\(DescriptorTable.maxNameBytes) bytes"))
    }

    /// The documented example is what the code prints for that instant.
    @Test func theTimestampExampleIsTheCodes() {
        let stamp = EventTimestamp(epochMicroseconds: 1_780_000_000_123_456, monotonicSeconds: 2.5).jsonObject
        for (key, value) in stamp.objectValue ?? [:] {
            #expect(Self.text.contains("\"\(key)\": \(value.jsonLine)"), "timestamp member \(key)")
            #expect(Self.text.contains("`\(key)`"), "timestamp member \(key) described")
        }
    }
}
