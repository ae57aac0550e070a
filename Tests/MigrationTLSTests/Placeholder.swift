import Testing
@testable import MigrationTLS

@Test func placeholder() {}
