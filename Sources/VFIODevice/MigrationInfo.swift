/// Layout of `struct vfio_device_migration_info` (seed header, v8): 64 bytes, packed,
/// at offset 0 of the region with `VFIO_REGION_TYPE_MIGRATION` (3) /
/// `VFIO_REGION_SUBTYPE_MIGRATION` (1). Multi-byte fields are host-endian, which is
/// little-endian on every platform this tool builds for.
public enum MigrationInfo {
    public static let size: UInt64 = 64
    public static let regionType: UInt32 = 3
    public static let regionSubtype: UInt32 = 1
    /// copied_pfns: nothing dirty in the rest of the range.
    public static let dirtyPFNsNone: UInt64 = 0
    /// copied_pfns: treat the rest of the range as dirty.
    public static let dirtyPFNsAll: UInt64 = ~0

    /// Who may access a field, per the header comments.
    public enum FieldAccess: Sendable, Equatable {
        case readWrite, readOnly, writeOnly
    }

    public enum Field: CaseIterable, Sendable, Equatable, CustomStringConvertible {
        case deviceState, reserved, pendingBytes, dataOffset, dataSize
        case startPFN, pageSize, totalPFNs, copiedPFNs

        public var offset: UInt64 {
            switch self {
            case .deviceState: return 0
            case .reserved: return 4
            case .pendingBytes: return 8
            case .dataOffset: return 16
            case .dataSize: return 24
            case .startPFN: return 32
            case .pageSize: return 40
            case .totalPFNs: return 48
            case .copiedPFNs: return 56
            }
        }

        /// Native width in bytes; the only width at which the field may be accessed.
        public var width: Int {
            switch self {
            case .deviceState, .reserved: return 4
            default: return 8
            }
        }

        public var access: FieldAccess {
            switch self {
            case .deviceState, .dataSize: return .readWrite
            // `reserved` has no defined meaning: readable (as 0), never written.
            case .reserved, .pendingBytes, .dataOffset, .copiedPFNs: return .readOnly
            case .startPFN, .pageSize, .totalPFNs: return .writeOnly
            }
        }

        /// The header's spelling, used in every error message.
        public var name: String {
            switch self {
            case .deviceState: return "device_state"
            case .reserved: return "reserved"
            case .pendingBytes: return "pending_bytes"
            case .dataOffset: return "data_offset"
            case .dataSize: return "data_size"
            case .startPFN: return "start_pfn"
            case .pageSize: return "page_size"
            case .totalPFNs: return "total_pfns"
            case .copiedPFNs: return "copied_pfns"
            }
        }

        public var description: String { name }

        /// The field whose bytes contain `offset`, if inside the header.
        public static func containing(_ offset: UInt64) -> Field? {
            allCases.first { offset >= $0.offset && offset < $0.offset + UInt64($0.width) }
        }
    }

    /// Checks that a `width`-byte access at `offset` hits exactly one header field at
    /// its native width and alignment. Does not check read/write permission (that is
    /// the driver's business; a `FileRegion` only guarantees it never issues a
    /// wrong-width access).
    public static func field(at offset: UInt64, width: Int, access: RegionAccess) throws(DeviceError) -> Field {
        guard offset < size else { throw DeviceError.notAHeaderField(access, offset: offset, width: width) }
        guard offset % UInt64(width) == 0 else { throw DeviceError.misaligned(access, offset: offset, width: width) }
        guard let field = Field.containing(offset) else {
            throw DeviceError.notAHeaderField(access, offset: offset, width: width)
        }
        guard field.offset == offset, field.width == width else {
            throw DeviceError.wrongWidth(access, field: field.name, offset: offset, width: width, nativeWidth: field.width)
        }
        return field
    }

    /// Checks a byte-range access lies inside the data section [64, regionSize):
    /// byte access to the header would be a wrong-width field access.
    public static func checkDataRange(offset: UInt64, count: Int, regionSize: UInt64, access: RegionAccess) throws(DeviceError) {
        guard count >= 0 else {
            throw DeviceError.invalidArgument(operation: "\(access) of data section", detail: "negative byte count \(count)")
        }
        let (end, overflow) = offset.addingReportingOverflow(UInt64(count))
        guard offset >= size, !overflow, end <= regionSize else {
            throw DeviceError.outOfRange(access, offset: offset, count: count, limit: regionSize,
                                         area: "data section [\(size), \(regionSize))")
        }
    }
}
