import Foundation
import TestSupport
import Glibc
@testable import MigrationTLS
import MigrationWire

/// Peers that a listening receiver must refuse. Each crafts its own bytes: raw TCP,
/// TLS with a bad certificate, or a valid certificate with hand-made frames
/// (`FrameEncoder`, or raw headers). After a HELLO they mirror the destination's
/// HELLO, so they pass the compatibility check and reach the frame checks.
enum HostilePeer: String, CaseIterable, Sendable {
    case plaintext, noClientCertificate, certificateFromAnotherCA, wrongName, expiredCertificate,
         garbageAfterHandshake, oversizedFrameHeader, decompressionBomb, pfnOutsideMemory,
         commitBeforeComplete, digestMismatch

    /// Refused in the TLS handshake (the receiver's `accept` fails, no session starts).
    var isHandshakeLevel: Bool {
        switch self {
        case .plaintext, .noClientCertificate, .certificateFromAnotherCA, .wrongName, .expiredCertificate: return true
        default: return false
        }
    }

    /// Sent after the source HELLO, so the destination had put its devices in RESUMING.
    var touchesDevices: Bool { !isHandshakeLevel && self != .garbageAfterHandshake }

    /// What the receiver's error must say.
    var expectedText: String {
        switch self {
        case .plaintext: return "does not speak TLS"
        case .noClientCertificate: return "presented no certificate"
        case .certificateFromAnotherCA: return "does not chain to the configured CA"
        case .wrongName: return "somebody-else.test"
        case .expiredCertificate: return "expired"
        case .garbageAfterHandshake: return "magic"
        case .oversizedFrameHeader: return "above the"
        case .decompressionBomb: return "inflates past its declared"
        case .pfnOutsideMemory: return "outside the announced guest memory"
        case .commitBeforeComplete: return "COMMIT frame not allowed"
        case .digestMismatch: return "SHA-256"
        }
    }

    struct Report: Sendable {
        /// Frames the hostile peer received from the receiver (HELLO, ABORT, … never READY).
        var frames: [Frame] = []
        var error: String?
        var abort: Abort? {
            for f in frames { if case .abort(let a) = f.body { return a } }
            return nil
        }
        var gotReady: Bool { frames.contains { if case .ready = $0.body { return true } else { return false } } }
    }

    func attack(port: UInt16, pki: TestPKI) -> Report {
        var report = Report()
        do {
            switch self {
            case .plaintext:
                let fd = try Self.tcpConnect(port: port)
                defer { Glibc.close(fd) }
                let req = Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
                _ = req.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                var tv = timeval(tv_sec: 10, tv_usec: 0)
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
                var buf = [UInt8](repeating: 0, count: 4096)
                while buf.withUnsafeMutableBytes({ recv(fd, $0.baseAddress, $0.count, 0) }) > 0 {}
            case .noClientCertificate, .certificateFromAnotherCA, .wrongName, .expiredCertificate:
                let cert = [.certificateFromAnotherCA: "stranger", .wrongName: "wrongname", .expiredCertificate: "expired"][self] ?? "source"
                let ctx = try pki.clientContext(cert: cert, omitCertificate: self == .noClientCertificate)
                let stream = try TLSConnector.connect(to: .tcp(host: "127.0.0.1", port: port), context: ctx, timeoutSeconds: 5)
                defer { stream.close() }
                stream.readTimeoutSeconds = 10
                _ = try stream.read(maxCount: 1)   // a TLS 1.3 client learns of its refusal when it reads
            default:
                try session(port: port, pki: pki, report: &report)
            }
        } catch {
            report.error = "\(error)"
        }
        return report
    }

    private func session(port: UInt16, pki: TestPKI, report: inout Report) throws {
        let stream = try TLSConnector.connect(to: .tcp(host: "127.0.0.1", port: port), context: try pki.clientContext(), timeoutSeconds: 5)
        defer { stream.close() }
        stream.readTimeoutSeconds = 15
        stream.writeTimeoutSeconds = 15
        var decoder = FrameDecoder(peer: .destination)
        var encoder = FrameEncoder()
        func nextFrame() throws -> Frame? {
            while true {
                if let f = try decoder.next() { return f }
                let bytes = try stream.read(maxCount: 1 << 16)
                if bytes.isEmpty { return nil }
                decoder.feed(bytes)
            }
        }
        guard let first = try nextFrame() else { throw SetupError("no HELLO") }
        report.frames.append(first)
        guard case .hello(let theirs) = first.body else { throw SetupError("expected HELLO, got \(first.body)") }
        var mine = theirs
        mine.role = .source
        let pages = theirs.memory.first?.pageCount ?? 0
        if self != .garbageAfterHandshake { try stream.write(try encoder.encode(.hello(mine))) }
        switch self {
        case .garbageAfterHandshake:
            var rng = SystemRandomNumberGenerator()
            try stream.write((0..<4096).map { _ in UInt8.random(in: 0...255, using: &rng) })
        case .oversizedFrameHeader:
            // A PAGES header declaring a 4 GiB payload: refused from the header alone.
            var header: [UInt8] = Array("VMIG".utf8) + [4, 0, 0, 0] + [0, 0, 0, 0] + [0xFF, 0xFF, 0xFF, 0xFF]
            withUnsafeBytes(of: encoder.nextSequence.littleEndian) { header += $0 }
            try stream.write(header)
        case .decompressionBomb:
            // 64 MiB of zeros deflate to ~64 KiB; declared as a 64 KiB chunk.
            let bomb = try Deflater(level: 9).compress([UInt8](repeating: 0, count: 64 << 20))
            try stream.write(try encoder.encode(.deviceData(DeviceData(phase: .precopy, encoding: .deflate, originalLength: 64 << 10, payload: bomb)), device: 0))
        case .pfnOutsideMemory:
            // Two raw pages from the last page of guest memory: the second is outside.
            let seg = PageSegment(startPFN: pages - 1, pageCount: 2, encoding: .raw, payload: [UInt8](repeating: 0xAB, count: 8192))
            try stream.write(try encoder.encode(.pages(Pages(pageSize: 4096, segments: [seg]))))
        case .commitBeforeComplete:
            try stream.write(try encoder.encode(.commit))
        case .digestMismatch:
            // A well-formed stream for every device whose DEVICE_END carries the wrong digest.
            let chunk = [UInt8](repeating: 7, count: 64)
            for d in theirs.devices.indices {
                try stream.write(try encoder.encode(.deviceData(DeviceData(phase: .precopy, encoding: .raw, originalLength: 64, payload: chunk)), device: UInt32(d)))
                try stream.write(try encoder.encode(.deviceEnd(DeviceEnd(totalBytes: 64, chunkCount: 1, sha256: [UInt8](repeating: 0xEE, count: 32))), device: UInt32(d)))
            }
            try stream.write(try encoder.encode(.complete))
        default: break
        }
        // Read what the receiver says until it closes.
        do {
            while let f = try nextFrame() { report.frames.append(f) }
        } catch {
            report.error = "\(error)"
        }
    }

    static func tcpConnect(port: UInt16) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = FaultProxy.loopback(port: port)
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0 else { Glibc.close(fd); throw SetupError("connect: errno \(errno)") }
        return fd
    }
}
