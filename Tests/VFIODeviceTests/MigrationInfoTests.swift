import SystemPackage
import Testing
@testable import VFIODevice

@Suite struct MigrationInfoTests {
    @Test func layoutMatchesTheHeader() {
        typealias F = MigrationInfo.Field
        let expected: [(F, UInt64, Int, String)] = [
            (.deviceState, 0, 4, "device_state"), (.reserved, 4, 4, "reserved"),
            (.pendingBytes, 8, 8, "pending_bytes"), (.dataOffset, 16, 8, "data_offset"),
            (.dataSize, 24, 8, "data_size"), (.startPFN, 32, 8, "start_pfn"),
            (.pageSize, 40, 8, "page_size"), (.totalPFNs, 48, 8, "total_pfns"),
            (.copiedPFNs, 56, 8, "copied_pfns"),
        ]
        #expect(F.allCases.count == expected.count)
        for (f, off, w, name) in expected {
            #expect(f.offset == off && f.width == w && f.name == name)
        }
        #expect(F.allCases.map { UInt64($0.width) }.reduce(0, +) == MigrationInfo.size)
        #expect(MigrationInfo.size == 64)
        #expect(MigrationInfo.regionType == 3 && MigrationInfo.regionSubtype == 1)
        #expect(MigrationInfo.dirtyPFNsNone == 0 && MigrationInfo.dirtyPFNsAll == UInt64.max)
        #expect(F.startPFN.access == .writeOnly && F.pageSize.access == .writeOnly && F.totalPFNs.access == .writeOnly)
        #expect(F.pendingBytes.access == .readOnly && F.dataOffset.access == .readOnly && F.copiedPFNs.access == .readOnly)
        #expect(F.deviceState.access == .readWrite && F.dataSize.access == .readWrite)
    }

    @Test func stateBitsHaveTheHeadersValuesAndReadableNames() {
        #expect(DeviceState.running.rawValue == 1 && DeviceState.saving.rawValue == 2 && DeviceState.resuming.rawValue == 4)
        #expect(DeviceState([.saving, .running]).description == "SAVING|RUNNING")
        #expect(DeviceState.stopped.description == "STOPPED")
        #expect(DeviceState.saving.description == "SAVING")
        #expect(DeviceState([.saving, .resuming]).description == "SAVING|RESUMING")
        #expect(DeviceState(rawValue: 0x101).description == "RUNNING|reserved=0x100")
        #expect(!DeviceState([.saving, .resuming]).isValid)
        #expect(DeviceState([.resuming]).isValid && DeviceState([.saving, .running]).isValid)
    }

    @Test func eachFieldHasItsOffsetWidthAndDirection() throws {
        #expect(try MigrationInfo.field(at: 0, width: 4, access: .read) == .deviceState)
        #expect(try MigrationInfo.field(at: 56, width: 8, access: .write) == .copiedPFNs)
        #expect(thrownError { try MigrationInfo.field(at: 8, width: 4, access: .read) }?.kind == "wrongWidth")
        #expect(thrownError { try MigrationInfo.field(at: 12, width: 4, access: .read) }?.kind == "wrongWidth")
        #expect(thrownError { try MigrationInfo.field(at: 0, width: 8, access: .read) }?.kind == "wrongWidth")
        #expect(thrownError { try MigrationInfo.field(at: 4, width: 8, access: .read) }?.kind == "misaligned")
        #expect(thrownError { try MigrationInfo.field(at: 2, width: 4, access: .write) }?.kind == "misaligned")
        #expect(thrownError { try MigrationInfo.field(at: 64, width: 8, access: .read) }?.kind == "notAHeaderField")
        #expect(thrownError { try MigrationInfo.checkDataRange(offset: 60, count: 8, regionSize: 4096, access: .read) }?.kind == "outOfRange")
        #expect(thrownError { try MigrationInfo.checkDataRange(offset: 4000, count: 97, regionSize: 4096, access: .read) }?.kind == "outOfRange")
        #expect(thrownError { try MigrationInfo.checkDataRange(offset: UInt64.max, count: 2, regionSize: 4096, access: .read) }?.kind == "outOfRange")
        #expect(thrownError { try MigrationInfo.checkDataRange(offset: 64, count: 4032, regionSize: 4096, access: .read) } == nil)
    }

    @Test func errorsReadWellForOperators() {
        let e = DeviceError.wrongWidth(.read, field: "pending_bytes", offset: 8, width: 4, nativeWidth: 8)
        #expect(e.description.contains("pending_bytes") && e.description.contains("EINVAL") && e.description.contains("width 4"))
        let t = DeviceError.transitionFailed(from: .resuming, to: .running, errno: .ioError, reason: "stream incomplete")
        #expect(t.description == "device state transition RESUMING -> RUNNING failed: stream incomplete: Input/output error (EIO)")
        #expect(t.errnoCode == .ioError)
        #expect(DeviceError.misaligned(.write, offset: 2, width: 4).errnoCode == .invalidArgument)
    }
}
