import Glibc
import Testing
@testable import MigrationTLS

/// TCP_INFO as `auto` reads it: the fields at the kernel's offsets from synthetic bytes,
/// and a real connection on 127.0.0.1 whose counters move when bytes are sent.
@Suite struct TCPInfoTests {
    /// `value` little-endian at `offset` of `bytes`.
    func put<T: FixedWidthInteger>(_ value: T, at offset: Int, in bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { for (i, b) in $0.enumerated() { bytes[offset + i] = b } }
    }

    @Test func fieldsComeFromTheKernelsOffsets() throws {
        var bytes = [UInt8](repeating: 0, count: 232)
        bytes[7] = 1   // tcpi_delivery_rate_app_limited:1 (and tcpi_fastopen_client_fail:2 = 0)
        put(UInt64(123_456_789), at: 120, in: &bytes)
        put(UInt32(65_536), at: 144, in: &bytes)
        put(UInt64(125_000_000), at: 160, in: &bytes)
        put(UInt64(4_000_000), at: 168, in: &bytes)
        put(UInt64(1_000_000), at: 176, in: &bytes)
        put(UInt64(8_000), at: 184, in: &bytes)
        let info = try #require(TCPInfo(kernelBytes: bytes))
        #expect(info == TCPInfo(notSentBytes: 65_536, deliveryRate: 125_000_000, deliveryRateAppLimited: true, busyMicroseconds: 4_000_000,
                                receiveWindowLimitedMicroseconds: 1_000_000, sendBufferLimitedMicroseconds: 8_000, bytesAcked: 123_456_789))
    }

    /// A kernel older than the busy/limited counters (Linux < 4.10) fills less: no figures.
    @Test func aShortAnswerHasNoFigures() {
        #expect(TCPInfo(kernelBytes: [UInt8](repeating: 0, count: 191)) == nil)
        #expect(TCPInfo(kernelBytes: [UInt8](repeating: 0, count: 192)) != nil)
    }

    /// 4 MiB through a loopback connection: the sender's acknowledged bytes count them,
    /// and nothing is left unsent once the reader took them all. A closed socket has none.
    @Test func aLoopbackConnectionReportsItsCounters() throws {
        let listener = try Socket.listen(on: .tcp(host: "127.0.0.1", port: 0))
        defer { listener.close() }
        let client = try Socket.connect(to: try listener.localTCPEndpoint(), timeoutSeconds: 10)
        defer { client.close() }
        var accepted: Socket?
        while accepted == nil {
            _ = try listener.wait(for: Int16(POLLIN), until: monotonicNow() + 10)
            accepted = try listener.acceptConnection()
        }
        let server = try #require(accepted)
        defer { server.close() }
        let before = try #require(client.tcpInfo())
        let total = 4 << 20
        var (sent, received) = (0, 0)
        let chunk = [UInt8](repeating: 7, count: 256 << 10)
        while received < total {
            if sent < total { sent += try client.rawWrite(Array(chunk.prefix(min(chunk.count, total - sent)))) }
            if let got = try server.rawRead(maxCount: 1 << 20) { received += got.count } else { _ = try server.wait(for: Int16(POLLIN), until: monotonicNow() + 10) }
        }
        var after = try #require(client.tcpInfo())
        for _ in 0..<100 where after.bytesAcked - before.bytesAcked < UInt64(total) {   // the last ACK may still be on its way
            _ = try server.wait(for: Int16(POLLIN), until: monotonicNow() + 0.01)
            after = try #require(client.tcpInfo())
        }
        #expect(after.bytesAcked - before.bytesAcked == UInt64(total))
        #expect(after.notSentBytes == 0)
        #expect(after.busyMicroseconds >= before.busyMicroseconds)
        client.close()
        #expect(client.tcpInfo() == nil)
    }
}
