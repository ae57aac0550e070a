extension Duration {
    /// As fractional seconds (for rates and displays).
    public var seconds: Double {
        let c = components
        return Double(c.seconds) + Double(c.attoseconds) / 1e18
    }
    public var milliseconds: Double { seconds * 1000 }
}
