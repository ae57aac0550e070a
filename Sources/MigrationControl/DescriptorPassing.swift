import Glibc

/// sendmsg/recvmsg with SCM_RIGHTS: the only raw-pointer code of this module.
/// The CMSG_* macros do not import into Swift, so the control-message layout
/// (a `cmsghdr`, then the descriptors, each block aligned to `size_t`) is
/// computed here by hand, once.
enum DescriptorPassing {
    /// More descriptors than this in one message are refused (MSG_CTRUNC).
    static let maxDescriptorsPerMessage = 4

    struct Received {
        var bytes: [UInt8]
        var descriptors: [Int32]
        /// The kernel dropped descriptors that did not fit; the ones received are closed already.
        var truncated: Bool
    }

    private static let headerSize = MemoryLayout<cmsghdr>.size
    private static func aligned(_ n: Int) -> Int { (n + MemoryLayout<Int>.size - 1) & ~(MemoryLayout<Int>.size - 1) }
    private static func space(for count: Int) -> Int { aligned(headerSize) + aligned(count * MemoryLayout<Int32>.size) }

    /// One non-blocking receive. nil: nothing available now; empty bytes: end of stream.
    /// Received descriptors are close-on-exec (MSG_CMSG_CLOEXEC), never leaked to children.
    static func receive(from fd: Int32, maxBytes: Int) throws(ControlError) -> Received? {
        var bytes = [UInt8](repeating: 0, count: maxBytes)
        let control = UnsafeMutableRawBufferPointer.allocate(byteCount: space(for: maxDescriptorsPerMessage), alignment: MemoryLayout<Int>.alignment)
        defer { control.deallocate() }
        control.initializeMemory(as: UInt8.self, repeating: 0)
        var flags: Int32 = 0
        var controlLength = 0
        let n = bytes.withUnsafeMutableBytes { data -> Int in
            var iov = iovec(iov_base: data.baseAddress, iov_len: data.count)
            return withUnsafeMutablePointer(to: &iov) { iovPointer in
                var message = msghdr()
                message.msg_iov = iovPointer
                message.msg_iovlen = 1
                message.msg_control = control.baseAddress
                message.msg_controllen = control.count
                let n = recvmsg(fd, &message, Int32(MSG_CMSG_CLOEXEC) | Int32(MSG_DONTWAIT))
                flags = message.msg_flags
                controlLength = Int(message.msg_controllen)
                return n
            }
        }
        if n < 0 {
            let err = errno
            if err == EAGAIN || err == EWOULDBLOCK || err == EINTR { return nil }
            if err == ECONNRESET { return Received(bytes: [], descriptors: [], truncated: false) }
            throw .systemCall(operation: "recvmsg", errno: err)
        }
        var descriptors = parseRights(UnsafeRawBufferPointer(rebasing: control[..<min(controlLength, control.count)]))
        let truncated = flags & Int32(MSG_CTRUNC) != 0
        if truncated { descriptors.forEach { _ = close($0) }; descriptors = [] }
        return Received(bytes: Array(bytes.prefix(n)), descriptors: descriptors, truncated: truncated)
    }

    /// Walks the control messages and collects every SCM_RIGHTS descriptor.
    private static func parseRights(_ control: UnsafeRawBufferPointer) -> [Int32] {
        var descriptors: [Int32] = []
        var offset = 0
        while offset + headerSize <= control.count {
            let header = control.loadUnaligned(fromByteOffset: offset, as: cmsghdr.self)
            let length = Int(header.cmsg_len)
            guard length >= headerSize, offset + length <= control.count else { break }
            if header.cmsg_level == SOL_SOCKET, header.cmsg_type == Int32(SCM_RIGHTS) {
                let count = (length - aligned(headerSize)) / MemoryLayout<Int32>.size
                for i in 0..<count {
                    descriptors.append(control.loadUnaligned(fromByteOffset: offset + aligned(headerSize) + i * 4, as: Int32.self))
                }
            }
            offset += aligned(length)
        }
        return descriptors
    }

    /// Sends `bytes` with `descriptors` attached to their first byte (blocking
    /// socket, or a short write on a non-blocking one). Returns bytes sent.
    static func send(_ bytes: [UInt8], descriptors: [Int32], on fd: Int32) throws(ControlError) -> Int {
        let controlSize = descriptors.isEmpty ? 0 : space(for: descriptors.count)
        let control = UnsafeMutableRawBufferPointer.allocate(byteCount: max(controlSize, 1), alignment: MemoryLayout<Int>.alignment)
        defer { control.deallocate() }
        control.initializeMemory(as: UInt8.self, repeating: 0)
        if !descriptors.isEmpty {
            var header = cmsghdr()
            header.cmsg_len = aligned(headerSize) + descriptors.count * MemoryLayout<Int32>.size
            header.cmsg_level = SOL_SOCKET
            header.cmsg_type = Int32(SCM_RIGHTS)
            control.storeBytes(of: header, toByteOffset: 0, as: cmsghdr.self)
            for (i, descriptor) in descriptors.enumerated() {
                control.storeBytes(of: descriptor, toByteOffset: aligned(headerSize) + i * 4, as: Int32.self)
            }
        }
        var payload = bytes
        let n = payload.withUnsafeMutableBytes { data -> Int in
            var iov = iovec(iov_base: data.baseAddress, iov_len: data.count)
            return withUnsafeMutablePointer(to: &iov) { iovPointer in
                var message = msghdr()
                message.msg_iov = iovPointer
                message.msg_iovlen = 1
                message.msg_control = controlSize == 0 ? nil : control.baseAddress
                message.msg_controllen = controlSize
                return sendmsg(fd, &message, Int32(MSG_NOSIGNAL))
            }
        }
        guard n >= 0 else { throw .systemCall(operation: "sendmsg", errno: errno) }
        return n
    }
}
