import Glibc
import Testing
@testable import VFIODevice

/// The DeviceError thrown by `body`, or nil (an unexpected error type is recorded).
func thrownError<T>(_ body: () throws -> T, sourceLocation: SourceLocation = #_sourceLocation) -> DeviceError? {
    do {
        _ = try body()
        return nil
    } catch let e as DeviceError {
        return e
    } catch {
        Issue.record("unexpected error type: \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

extension DeviceError {
    /// The case name, for compact assertions.
    var kind: String { Mirror(reflecting: self).children.first?.label ?? "\(self)" }
}

/// Small sizes keep the debug-build test run short.
func smallConfig(seed: UInt64 = 7, stateSize: Int = 48 << 10, maxChunk: Int = 4096,
                 dirtyPages: Int = 8, stateBytes: Int = 600) -> SimulatedDevice.Configuration {
    SimulatedDevice.Configuration(stateSize: stateSize, seed: seed, dirtyPagesPerStep: dirtyPages,
                                  stateBytesPerStep: stateBytes, maxChunkSize: maxChunk)
}

func makeGuest(pages: Int = 256, name: String = "vfio-test-guest") throws -> GuestMemory {
    try GuestMemory(anonymousNamed: name, size: UInt64(pages * 4096), pageSize: 4096)
}

/// A fresh temporary directory, removed by the caller with `removeTree`.
func makeTempDir() -> String {
    var template = Array("/tmp/vfio-device-test-XXXXXX".utf8CString)
    let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    precondition(p != nil, "mkdtemp failed")
    return String(cString: p!)
}

func removeTree(_ dir: String) {
    if let d = opendir(dir) {
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { unlink(dir + "/" + name) }
        }
        closedir(d)
    }
    rmdir(dir)
}

/// Records every access and forwards it: proves which accesses a sequence issues.
final class RecordingRegion: MigrationRegion, @unchecked Sendable {
    enum Op: Equatable { case r32(UInt64), w32(UInt64), r64(UInt64), w64(UInt64), rb(UInt64, Int), wb(UInt64, Int) }
    let inner: any MigrationRegion
    var log: [Op] = []
    init(_ inner: any MigrationRegion) { self.inner = inner }
    var regionSize: UInt64 { inner.regionSize }
    func read32(at o: UInt64) throws -> UInt32 { log.append(.r32(o)); return try inner.read32(at: o) }
    func write32(_ v: UInt32, at o: UInt64) throws { log.append(.w32(o)); try inner.write32(v, at: o) }
    func read64(at o: UInt64) throws -> UInt64 { log.append(.r64(o)); return try inner.read64(at: o) }
    func write64(_ v: UInt64, at o: UInt64) throws { log.append(.w64(o)); try inner.write64(v, at: o) }
    func readBytes(count: Int, at o: UInt64) throws -> [UInt8] { log.append(.rb(o, count)); return try inner.readBytes(count: count, at: o) }
    func writeBytes(_ b: [UInt8], at o: UInt64) throws { log.append(.wb(o, b.count)); try inner.writeBytes(b, at: o) }
}

extension DirtySegment {
    /// Every dirty PFN, expanded from the runs (tests only: small ranges).
    func dirtyPFNs() -> [UInt64] {
        dirtyRuns.flatMap { $0.startPFN..<($0.startPFN + $0.count) }
    }
}
