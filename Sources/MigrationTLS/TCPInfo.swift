import Glibc

/// What the Linux kernel knows about one TCP connection (`getsockopt(TCP_INFO)`,
/// `struct tcp_info` in <linux/tcp.h>): the fields `auto` reads to tell whether the
/// network, the receiver or the sender itself limits delivery.
/// Read from the kernel's bytes at their fixed offsets: Glibc's own `struct tcp_info`
/// stops before these fields, and the kernel fills only what it knows (Linux ≥ 4.10
/// has all of them).
public struct TCPInfo: Sendable, Equatable {
    /// Bytes written to the socket that TCP has not sent yet (`tcpi_notsent_bytes`).
    public var notSentBytes: UInt32
    /// The kernel's latest delivery-rate sample, bytes per second (`tcpi_delivery_rate`).
    public var deliveryRate: UInt64
    /// That sample was taken while the application left the link idle, so it is a lower bound.
    public var deliveryRateAppLimited: Bool
    /// Microseconds with data queued or in flight (`tcpi_busy_time`, the two below included).
    public var busyMicroseconds: UInt64
    /// Microseconds stalled by the peer's receive window (`tcpi_rwnd_limited`).
    public var receiveWindowLimitedMicroseconds: UInt64
    /// Microseconds the network starved because the send buffer was too small (`tcpi_sndbuf_limited`).
    public var sendBufferLimitedMicroseconds: UInt64
    /// Bytes the peer acknowledged (`tcpi_bytes_acked`).
    public var bytesAcked: UInt64

    public init(notSentBytes: UInt32 = 0, deliveryRate: UInt64 = 0, deliveryRateAppLimited: Bool = false, busyMicroseconds: UInt64 = 0,
                receiveWindowLimitedMicroseconds: UInt64 = 0, sendBufferLimitedMicroseconds: UInt64 = 0, bytesAcked: UInt64 = 0) {
        self.notSentBytes = notSentBytes
        self.deliveryRate = deliveryRate
        self.deliveryRateAppLimited = deliveryRateAppLimited
        self.busyMicroseconds = busyMicroseconds
        self.receiveWindowLimitedMicroseconds = receiveWindowLimitedMicroseconds
        self.sendBufferLimitedMicroseconds = sendBufferLimitedMicroseconds
        self.bytesAcked = bytesAcked
    }

    /// Offsets in `struct tcp_info` (fixed by the kernel's ABI: fields are only appended).
    enum Offset {
        static let appLimitedByte = 7
        static let bytesAcked = 120
        static let notSentBytes = 144
        static let deliveryRate = 160
        static let busyTime = 168
        static let receiveWindowLimited = 176
        static let sendBufferLimited = 184
        /// The first byte past the last field read: a kernel that fills fewer has no figures.
        static let end = 192
    }
    /// What is asked of the kernel: room for every field it may know (232 bytes on 6.x).
    static let bufferSize = 256

    /// The fields from the kernel's bytes; nil when it filled fewer than `Offset.end`.
    public init?(kernelBytes bytes: [UInt8]) {
        guard bytes.count >= Offset.end else { return nil }
        func u64(_ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(bytes[at + $1]) << (8 * UInt64($1)) } }
        func u32(_ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[at + $1]) << (8 * UInt32($1)) } }
        self.init(notSentBytes: u32(Offset.notSentBytes), deliveryRate: u64(Offset.deliveryRate),
                  deliveryRateAppLimited: bytes[Offset.appLimitedByte] & 1 != 0, busyMicroseconds: u64(Offset.busyTime),
                  receiveWindowLimitedMicroseconds: u64(Offset.receiveWindowLimited),
                  sendBufferLimitedMicroseconds: u64(Offset.sendBufferLimited), bytesAcked: u64(Offset.bytesAcked))
    }

    /// The one getsockopt: nil for a socket that is not TCP, an error, or a kernel
    /// older than these fields (callers then do without).
    static func read(fd: Int32) -> TCPInfo? {
        var bytes = [UInt8](repeating: 0, count: bufferSize)
        var length = socklen_t(bufferSize)
        let rc = bytes.withUnsafeMutableBytes { getsockopt(fd, Int32(IPPROTO_TCP), TCP_INFO, $0.baseAddress, &length) }
        guard rc == 0 else { return nil }
        return TCPInfo(kernelBytes: Array(bytes.prefix(Int(length))))
    }
}

extension Socket {
    /// The connection's TCP_INFO; nil once closed, or when it is not TCP.
    func tcpInfo() -> TCPInfo? {
        guard isTCP, (try? enter()) != nil else { return nil }
        defer { leave() }
        return TCPInfo.read(fd: fd)
    }
}
