import ArgumentParser
import CommandLineSupport
import Foundation
import Glibc
import MigrationEngine
import MigrationTLS
import MigrationWire
import VFIODevice

// The benchmark's baselines on the same bytes: the project's TLS layer alone and
// a plain TCP copy (each a sink/source pair of this binary's hidden subcommands
// over 127.0.0.1), and zlib level 1 on one core (in process).

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

struct TLSSink: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tls-sink", abstract: "Benchmark baseline: receive one TLS stream and discard it.", shouldDisplay: false)
    @Option(name: .customLong("port-file")) var portFile: String
    // Not `--certs`: the parent command's own option of that name would take it.
    @Option(name: .customLong("certificate-dir")) var certs: String

    func run() throws {
        ProcessSetup.apply()
        let context = try TLSContext(configuration: BenchCertificates(directory: certs).configuration(.destination), role: .server)
        let listener = try TLSListener(endpoint: .tcp(host: "127.0.0.1", port: 0), context: context)
        guard case .tcp(_, let port) = listener.boundEndpoint else { throw BenchError.notTCPListener }
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

struct TLSSource: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tls-source", abstract: "Benchmark baseline: push the non-zero pages of files through one TLS stream.", shouldDisplay: false)
    @Option var connect: String
    @Option(name: .customLong("file")) var files: [String]
    // Not `--certs`: the parent command's own option of that name would take it.
    @Option(name: .customLong("certificate-dir")) var certs: String

    func run() throws {
        ProcessSetup.apply()
        let context = try TLSContext(configuration: BenchCertificates(directory: certs).configuration(.source), role: .client)
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

struct TCPSink: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tcp-sink", abstract: "Benchmark baseline: receive one plain TCP stream and discard it.", shouldDisplay: false)
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

struct TCPSource: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tcp-source", abstract: "Benchmark baseline: push the non-zero pages of files through one plain TCP stream.", shouldDisplay: false)
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

/// zlib level 1 on one core over the same bytes (all pages, zero pages
/// included) in 1 MiB chunks: the time just to compress, and the output size.
func benchDeflateBaseline(files: [String]) throws -> (seconds: Double, inputBytes: UInt64, outputBytes: UInt64) {
    let deflater = try Deflater(level: 1)
    var seconds = 0.0
    var input: UInt64 = 0, output: UInt64 = 0
    for path in files {
        guard let h = FileHandle(forReadingAtPath: path) else { throw BenchError.cannotOpen(path: path) }
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
