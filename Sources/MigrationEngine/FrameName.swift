import MigrationWire

extension FrameBody {
    /// The frame type's name as in docs/PROTOCOL.md.
    var name: String {
        switch self {
        case .hello: return "HELLO"
        case .deviceData: return "DEVICE_DATA"
        case .dirtyBitmap: return "DIRTY_BITMAP"
        case .pages: return "PAGES"
        case .iterationEnd: return "ITERATION_END"
        case .deviceEnd: return "DEVICE_END"
        case .complete: return "COMPLETE"
        case .ready: return "READY"
        case .commit: return "COMMIT"
        case .resumed: return "RESUMED"
        case .abort: return "ABORT"
        case .keepAlive: return "KEEPALIVE"
        }
    }
}
