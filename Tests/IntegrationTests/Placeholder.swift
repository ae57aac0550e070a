import Testing
@testable import VFIODevice

@Test func placeholder() {}
