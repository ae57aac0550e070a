import Foundation
import VFIODevice

/// A region in front of another that records every access and forwards it: proves
/// which accesses a sequence issues, and lets a test say "RUNNING was never
/// written" rather than only "is not RUNNING now".
public final class RecordingRegion: MigrationRegion, @unchecked Sendable {  // logs guarded by `lock`
    public enum Op: Equatable, Sendable { case r32(UInt64), w32(UInt64), r64(UInt64), w64(UInt64), rb(UInt64, Int), wb(UInt64, Int) }

    public let inner: any MigrationRegion
    private let lock = NSLock()
    private var ops: [Op] = []
    private var states: [DeviceState] = []

    public init(_ inner: any MigrationRegion) { self.inner = inner }

    /// Every access since the last reset, in order.
    public var log: [Op] {
        get { locked { ops } }
        set { locked { ops = newValue } }
    }
    /// Every value written to device_state (defined bits only).
    public var stateWrites: [DeviceState] { locked { states } }
    /// Data-section writes (resume chunks).
    public var dataWrites: Int { locked { ops.count { if case .wb = $0 { true } else { false } } } }
    public func resetLog() { locked { ops = []; states = [] } }

    private func locked<R>(_ body: () -> R) -> R {
        lock.lock()
        defer { lock.unlock() }
        return body()
    }
    private func record(_ op: Op) { locked { ops.append(op) } }

    public var regionSize: UInt64 { inner.regionSize }
    public func read32(at o: UInt64) throws(DeviceError) -> UInt32 { record(.r32(o)); return try inner.read32(at: o) }
    public func write32(_ v: UInt32, at o: UInt64) throws(DeviceError) {
        locked {
            ops.append(.w32(o))
            if o == MigrationInfo.Field.deviceState.offset { states.append(DeviceState(rawValue: v).defined) }
        }
        try inner.write32(v, at: o)
    }
    public func read64(at o: UInt64) throws(DeviceError) -> UInt64 { record(.r64(o)); return try inner.read64(at: o) }
    public func write64(_ v: UInt64, at o: UInt64) throws(DeviceError) { record(.w64(o)); try inner.write64(v, at: o) }
    public func readBytes(count: Int, at o: UInt64) throws(DeviceError) -> [UInt8] { record(.rb(o, count)); return try inner.readBytes(count: count, at: o) }
    public func writeBytes(_ b: [UInt8], at o: UInt64) throws(DeviceError) { record(.wb(o, b.count)); try inner.writeBytes(b, at: o) }
}
