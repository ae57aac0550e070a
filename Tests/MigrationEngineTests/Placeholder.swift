import Testing
@testable import MigrationEngine

@Test func placeholder() {}
