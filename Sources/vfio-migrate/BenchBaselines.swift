import ArgumentParser
import CommandLineSupport
import Foundation
import Glibc
import MigrationEngine
import MigrationTLS
import MigrationWire
import VFIODevice

// The benchmark's baselines on the same bytes: the project's TLS layer alone and
// a plain TCP copy (each a hidden sink/source process pair over 127.0.0.1), and
// zlib level 1 on one core (in process).

/// The non-zero 4 KiB pages of the corpus files, in order, 1 MiB of file at a
/// time (read through a shared mapping, as the engine reads guest memory).
struct NonZeroPages {
    let files: [String]
    func forEachBatch(_ body: ([UInt8]) throws -> Void) throws {
        let ps = BenchCorpus.pageSize
        for path in files {
            let memory = try GuestMemory(path: path, size: nil, create: false, pageSize: ps)
            var pfn: UInt64 = 0
            while pfn < memory.pageCount {
                let n = Int(min(256, memory.pageCount - pfn))
                let bytes = try memory.readPages(startPFN: pfn, count: n)
                var out: [UInt8] = []
                out.reserveCapacity(bytes.count)
                for p in 0..<n where !GuestMemory.isZero(bytes, range: (p * ps)..<((p + 1) * ps)) {
                    out.append(contentsOf: bytes[(p * ps)..<((p + 1) * ps)])
                }
                if !out.isEmpty { try body(out) }
                pfn += UInt64(n)
            }
        }
    }
}

/// The one-line JSON result each baseline process prints.
private func printResult(_ role: String, bytes: UInt64, seconds: Double) {
    let o: [String: Any] = ["event": "baseline", "role": role, "bytes": bytes, "seconds": seconds]
    if let d = try? JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]) {
        FileHandle.standardOutput.write(d + Data("\n".utf8))
    }
}

struct BenchTLSSink: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench-tls-sink", abstract: "Benchmark baseline: receive one TLS stream and discard it.", shouldDisplay: false)
    @Option(name: .customLong("port-file")) var portFile: String
    @OptionGroup var tls: TLSOptions

    func run() throws {
        ProcessSetup.apply()
        let context = try TLSContext(configuration: tls.configuration(), role: .server)
        let listener = try TLSListener(endpoint: .tcp(host: "127.0.0.1", port: 0), context: context)
        guard case .tcp(_, let port) = listener.boundEndpoint else { throw CLIError.config("not a TCP listener") }
        try "\(port)\n".write(toFile: portFile, atomically: true, encoding: .utf8)
        let stream = try listener.accept(timeoutSeconds: 60)
        let start = ContinuousClock.now
        var total: UInt64 = 0
        while true {
            let got = try stream.read(maxCount: 1 << 20)
            if got.isEmpty { break }
            total += UInt64(got.count)
        }
        let seconds = (ContinuousClock.now - start).seconds
        try? stream.shutdown()
        stream.close()
        listener.close()
        printResult("sink", bytes: total, seconds: seconds)
    }
}

struct BenchTLSSource: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench-tls-source", abstract: "Benchmark baseline: push the non-zero pages of files through one TLS stream.", shouldDisplay: false)
    @Option var connect: String
    @Option(name: .customLong("file")) var files: [String]
    @OptionGroup var tls: TLSOptions

    func run() throws {
        ProcessSetup.apply()
        let context = try TLSContext(configuration: tls.configuration(), role: .client)
        let stream = try TLSConnector.connect(to: try Endpoint(parsing: connect), context: context, timeoutSeconds: 10)
        let start = ContinuousClock.now
        var total: UInt64 = 0
        try NonZeroPages(files: files).forEachBatch { batch in
            try stream.write(batch)
            total += UInt64(batch.count)
        }
        try stream.shutdown()
        let seconds = (ContinuousClock.now - start).seconds
        stream.close()
        printResult("source", bytes: total, seconds: seconds)
    }
}

struct BenchTCPSink: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench-tcp-sink", abstract: "Benchmark baseline: receive one plain TCP stream and discard it.", shouldDisplay: false)
    @Option(name: .customLong("port-file")) var portFile: String

    func run() throws {
        ProcessSetup.apply()
        let listener = try PlainTCP.listenLoopback()
        defer { Glibc.close(listener.fd) }
        try "\(listener.port)\n".write(toFile: portFile, atomically: true, encoding: .utf8)
        let fd = try PlainTCP.accept(listener.fd)
        defer { Glibc.close(fd) }
        let start = ContinuousClock.now
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var total: UInt64 = 0
        while true {
            let n = try PlainTCP.read(fd, into: &buffer)
            if n == 0 { break }
            total += UInt64(n)
        }
        printResult("sink", bytes: total, seconds: (ContinuousClock.now - start).seconds)
    }
}

struct BenchTCPSource: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench-tcp-source", abstract: "Benchmark baseline: push the non-zero pages of files through one plain TCP stream.", shouldDisplay: false)
    @Option var port: UInt16
    @Option(name: .customLong("file")) var files: [String]

    func run() throws {
        ProcessSetup.apply()
        let fd = try PlainTCP.connectLoopback(port: port)
        let start = ContinuousClock.now
        var total: UInt64 = 0
        try NonZeroPages(files: files).forEachBatch { batch in
            try PlainTCP.writeAll(fd, batch)
            total += UInt64(batch.count)
        }
        Glibc.shutdown(fd, Int32(SHUT_WR))
        // Wait for the sink's close: the data has then been read, not only queued.
        var scratch = [UInt8](repeating: 0, count: 4096)
        while (try? PlainTCP.read(fd, into: &scratch)) ?? 0 > 0 {}
        Glibc.close(fd)
        printResult("source", bytes: total, seconds: (ContinuousClock.now - start).seconds)
    }
}

/// Thin wrapper over the BSD socket calls for the plain-TCP baseline (the
/// project's Socket type is internal to MigrationTLS). Blocking, IPv4 loopback only.
enum PlainTCP {
    static func fail(_ what: String) -> CLIError { .config("\(what): \(String(cString: strerror(errno)))") }

    private static func loopback(port: UInt16) -> sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        a.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return a
    }

    static func listenLoopback() throws -> (fd: Int32, port: UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw fail("socket") }
        var addr = loopback(port: 0)
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, listen(fd, 1) == 0 else { Glibc.close(fd); throw fail("bind/listen 127.0.0.1:0") }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        guard named == 0 else { Glibc.close(fd); throw fail("getsockname") }
        return (fd, UInt16(bigEndian: addr.sin_port))
    }

    static func accept(_ listener: Int32) throws -> Int32 {
        while true {
            let fd = Glibc.accept(listener, nil, nil)
            if fd >= 0 { return fd }
            if errno != EINTR { throw fail("accept") }
        }
    }

    static func connectLoopback(port: UInt16) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw fail("socket") }
        var addr = loopback(port: port)
        let r = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard r == 0 else { Glibc.close(fd); throw fail("connect 127.0.0.1:\(port)") }
        return fd
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { buf in
            var off = 0
            while off < buf.count {
                let n = Glibc.write(fd, buf.baseAddress! + off, buf.count - off)
                if n < 0 { if errno == EINTR { continue }; throw fail("write") }
                off += n
            }
        }
    }

    /// Bytes read into the front of `buffer`; 0 at EOF.
    static func read(_ fd: Int32, into buffer: inout [UInt8]) throws -> Int {
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n >= 0 { return n }
            if errno != EINTR { throw fail("read") }
        }
    }
}

/// zlib level 1 on one core over the same bytes (all pages, zero pages
/// included) in 1 MiB chunks: the time just to compress, and the output size.
func benchDeflateBaseline(files: [String]) throws -> (seconds: Double, inputBytes: UInt64, outputBytes: UInt64) {
    let deflater = try Deflater(level: 1)
    var seconds = 0.0
    var input: UInt64 = 0, output: UInt64 = 0
    for path in files {
        guard let h = FileHandle(forReadingAtPath: path) else { throw CLIError.config("cannot open \(path)") }
        defer { try? h.close() }
        while let d = try h.read(upToCount: 1 << 20), !d.isEmpty {
            let chunk = [UInt8](d)
            let t = ContinuousClock.now
            let out = try deflater.compress(chunk)
            seconds += (ContinuousClock.now - t).seconds
            input += UInt64(chunk.count)
            output += UInt64(out.count)
        }
    }
    return (seconds, input, output)
}
