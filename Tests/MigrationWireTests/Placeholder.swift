import Testing
@testable import MigrationWire

@Test func placeholder() {}
