import Foundation
import Glibc
import SystemPackage
import Testing
@testable import VFIODevice
@testable import VFIOSimulator
import TestSupport

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

extension VFIOKernel {
    /// A kernel that answers only ioctls, with `handler`'s result: 0 or -errno, as
    /// the syscall returns it. Anything else is EBADF: the test never opened a file.
    static func ioctlOnly(_ handler: @escaping @Sendable (Int32, UInt, UnsafeMutableRawPointer) -> Int32) -> VFIOKernel {
        VFIOKernel(
            open: { _, _, _ throws(Errno) in throw .badFileDescriptor },
            close: { _ throws(Errno) in throw .badFileDescriptor },
            ioctl: { fd, request, argument throws(Errno) in
                guard case .buffer(let buffer) = argument, let address = buffer.baseAddress else { throw .invalidArgument }
                let rc = handler(fd, request, address)
                guard rc >= 0 else { throw Errno(rawValue: -rc) }
                return rc
            },
            pread: { _, _, _ throws(Errno) in throw .badFileDescriptor },
            pwrite: { _, _, _ throws(Errno) in throw .badFileDescriptor },
            fileSize: { _ throws(Errno) in throw .badFileDescriptor },
            truncate: { _, _ throws(Errno) in throw .badFileDescriptor },
            memfdCreate: { _ throws(Errno) in throw .badFileDescriptor },
            mmap: { _, _ throws(Errno) in throw .badFileDescriptor },
            munmap: { _, _ throws(Errno) in throw .invalidArgument },
            madvise: { _, _, _ throws(Errno) in throw .invalidArgument },
            msync: { _, _ throws(Errno) in throw .invalidArgument })
    }
}

extension DirtySegment {
    /// Every dirty PFN, expanded from the runs (tests only: small ranges).
    func dirtyPFNs() -> [UInt64] {
        dirtyRuns.flatMap { $0.startPFN..<($0.startPFN + $0.count) }
    }
}
