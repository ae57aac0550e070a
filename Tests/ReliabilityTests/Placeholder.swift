import Testing

@Test func reliabilityPlaceholder() {}
