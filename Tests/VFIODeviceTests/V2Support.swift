import Foundation
import Glibc
import SystemPackage
import Testing
@testable import VFIODevice
@testable import VFIOSimulator

/// A small simulated v2 device and the engine-facing device made from it.
func v2Sim(flags: V2MigrationFlags = [.stopCopy, .p2p, .preCopy], stateSize: Int = 40 << 10, seed: UInt64 = 3,
           memory: GuestMemory? = nil, maxRead: Int = 3000, configure: (inout SimulatedV2Device.Configuration) -> Void = { _ in })
    -> SimulatedV2Device {
    var c = SimulatedV2Device.Configuration(stateSize: stateSize, seed: seed, flags: flags, dirtyPagesPerStep: 6, stateBytesPerStep: 900)
    c.maxReadBytes = maxRead
    configure(&c)
    return SimulatedV2Device(configuration: c, guestMemory: memory)
}

func v2Device(_ sim: SimulatedV2Device, name: String = "v2dev", chunk: Int = 8192) throws -> MigrationDevice {
    try sim.migrationDevice(name: name, chunkBytes: chunk)
}

/// Everything the source's save produces, chunk by chunk, as the engine drives it:
/// start saving, pre-copy passes (with workload in between), P2P, STOP_COPY, drain, STOP.
func v2Save(_ device: MigrationDevice, sim: SimulatedV2Device, passes: Int = 2) throws -> [[UInt8]] {
    var seq = SaveSequence(device: device)
    var chunks: [[UInt8]] = []
    try device.setState([.saving, .running])
    for _ in 0..<passes {
        while let c = try seq.nextChunk() { chunks.append(c.bytes) }
        sim.workloadStep()
    }
    try device.quiesceP2P()
    try device.setState(.saving)
    while let c = try seq.nextChunk() { chunks.append(c.bytes) }
    return chunks
}

/// Resumes `stream` on `device` in pieces of `piece` bytes and leaves RESUMING (STOP).
func v2Resume(_ device: MigrationDevice, stream: [UInt8], piece: Int) throws {
    try device.setState(.resuming)
    var seq = ResumeSequence(device: device)
    var i = 0
    while i < stream.count {
        let n = min(piece, stream.count - i)
        try seq.apply(Array(stream[i..<(i + n)]))
        i += n
    }
    try device.finishResuming()
}

/// The v2 error thrown by `body`, or nil.
func v2Error(_ body: () throws -> Void) -> DeviceError? {
    do { try body(); return nil } catch let e as DeviceError { return e } catch { return nil }
}

/// errno of a raw seam call.
func errnoOf(_ body: () throws(Errno) -> Void) -> Errno? {
    do throws(Errno) { try body(); return nil } catch { return error }
}

/// One raw VFIO_DEVICE_FEATURE call with `arg`; errno or nil.
func rawFeature(_ sim: SimulatedV2Device, _ arg: inout UAPIBuffer) -> Errno? {
    let k = sim.kernel
    let fd = sim.deviceFD
    return errnoOf { () throws(Errno) in
        _ = try arg.withArgument { (a) throws(Errno) in try k.ioctl(fd, VFIOv2.deviceFeature, a) }
    }
}
