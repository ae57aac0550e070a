import Glibc

/// The guest's dirty-page bitmap the VMM fills in shared memory (`--dirty vmm`):
/// one bit per page, little-endian 64-bit words, page i = bit i%64 of word i/64.
/// docs/EVENTS.md, "Dirty-log shared memory", is the normative text.
public struct DirtyLogLayout: Sendable, Equatable {
    public var pageSize: UInt64
    public var pageCount: UInt64

    public init(pageSize: UInt64, pageCount: UInt64) {
        self.pageSize = pageSize
        self.pageCount = pageCount
    }

    /// Whole 64-bit words, so the VMM can fill it with word stores.
    public var byteCount: Int { Int((pageCount + 63) / 64 * 8) }

    /// The dirty page numbers in `bitmap` (at least `byteCount` bytes); bits past
    /// `pageCount` are ignored.
    public func dirtyPages(in bitmap: some Collection<UInt8>) -> [UInt64] {
        var pages: [UInt64] = []
        let bytes = Array(bitmap.prefix(byteCount))
        for wordIndex in 0..<(bytes.count / 8) {
            var word: UInt64 = 0
            for b in 0..<8 { word |= UInt64(bytes[wordIndex * 8 + b]) << (8 * b) }  // little-endian
            while word != 0 {
                let bit = UInt64(word.trailingZeroBitCount)
                let page = UInt64(wordIndex) * 64 + bit
                if page < pageCount { pages.append(page) }
                word &= word - 1
            }
        }
        return pages
    }

    static let maxPages: UInt64 = 1 << 40

    /// `dirty-log-setup` arguments: `page-size` (a power of two, 512 or more) and `pages`.
    init(setupArguments arguments: [String: JSONValue]) throws(ControlError) {
        let command = "dirty-log-setup"
        for key in arguments.keys where !["page-size", "pages"].contains(key) {
            throw .unknownArgument(command: command, argument: key)
        }
        guard let sizeValue = arguments["page-size"] else { throw .missingArgument(command: command, argument: "page-size") }
        guard let size = sizeValue.intValue, size >= 512, size & (size - 1) == 0 else {
            throw .invalidArgument(command: command, argument: "page-size", reason: "must be a power of two, 512 or more")
        }
        guard let countValue = arguments["pages"] else { throw .missingArgument(command: command, argument: "pages") }
        guard let count = countValue.intValue, count > 0, UInt64(count) <= Self.maxPages else {
            throw .invalidArgument(command: command, argument: "pages", reason: "must be in 1...\(Self.maxPages)")
        }
        self.init(pageSize: UInt64(size), pageCount: UInt64(count))
    }

    /// The bitmap must be shared memory this process can read, large enough for
    /// every page: a regular file (memfd, hugetlbfs, tmpfs) not opened write-only.
    func check(_ fd: Int32, name: String) throws(ControlError) {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .unsuitableDescriptor(name: name, reason: "fstat failed: \(String(cString: strerror(errno)))") }
        guard st.st_mode & S_IFMT == S_IFREG else {
            throw .unsuitableDescriptor(name: name, reason: "not a memfd or shared file")
        }
        guard fcntl(fd, F_GETFL) & O_ACCMODE != O_WRONLY else {
            throw .unsuitableDescriptor(name: name, reason: "opened write-only; the transport must read it")
        }
        guard st.st_size >= byteCount else {
            throw .unsuitableDescriptor(name: name, reason: "\(st.st_size) bytes, the bitmap of \(pageCount) pages needs \(byteCount)")
        }
    }
}
