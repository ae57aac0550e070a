import Foundation
import TestSupport
import MigrationEngine
import MigrationTLS
import MigrationWire
import VFIODevice

/// Where each frame of a migration lies in the sender's plaintext stream, measured
/// once with a clean run: the real `Sender` talks through a counting `FaultProxy` to
/// a recording destination that walks the frame headers, answers HELLO, READY after
/// COMPLETE and RESUMED after COMMIT. Faults are then placed at these offsets in runs
/// against the real `Receiver` with identical devices (the stream is deterministic:
/// seeded simulated devices, no workload, no keep-alive in a short run).
struct FrameMap: Sendable {
    struct Entry: Sendable, CustomStringConvertible {
        var type: UInt16
        var device: UInt32
        var plain: Range<Int>
        /// DEVICE_DATA: phase; DIRTY_BITMAP: copied kind; ITERATION_END: iteration; PAGES: first PFN.
        var detail: UInt64
        var pageCount: UInt64 = 0
        var description: String { "\(FrameMap.name(type))@\(plain)" }
    }
    var toReceiver: [Entry]
    var toSender: [Entry]
    /// Raw bytes of the client's handshake and of its first (ClientHello) record.
    var clientHandshakeBytes: Int
    var clientHelloRecordBytes: Int

    static func name(_ t: UInt16) -> String {
        ["?", "HELLO", "DEVICE_DATA", "DIRTY_BITMAP", "PAGES", "ITERATION_END", "DEVICE_END", "COMPLETE", "READY", "COMMIT", "RESUMED", "ABORT", "KEEPALIVE"][Int(t) < 13 ? Int(t) : 0]
    }

    func first(_ type: UInt16, where cond: (Entry) -> Bool = { _ in true }) -> Entry? {
        toReceiver.first { $0.type == type && cond($0) }
    }

    /// The standard scenario the cut tests use: one device, no workload, and a DMA burst
    /// into a few guest pages after the first pre-copy iteration has been delivered (so the
    /// second iteration has a partial dirty bitmap to send).
    static let dmaPages: [UInt64] = [3, 4, 5, 17, 18, 130, 131, 132, 133, 400, 401, 777, 1000]

    static func scenario() throws -> SimPair { try SimPair(names: ["gpu0"], stateSize: 128 << 10, memoryPages: 1024, maxChunk: 16 << 10) }

    /// The sender-side hook of the scenario: after ITERATION_END(0) has reached the
    /// destination (so no page of the first pass is read while the DMA writes), dirty pages.
    static func dmaHook(_ pair: SimPair, waitDelivered: @escaping @Sendable () -> Void) -> @Sendable (MigrationEvent) -> Void {
        let sim = pair.sourceSims[0]
        return { event in
            if case .iterationEnd(let i, _, _, _, _) = event, i == 1 {
                waitDelivered()
                sim.simulateDMA(toPages: dmaPages)
            }
        }
    }

    static let measured: Result<FrameMap, SetupError> = Result { () throws(SetupError) in
        do { return try measure() } catch let e as SetupError { throw e } catch { throw SetupError("measuring the frame map: \(error)") }
    }

    private static func measure() throws -> FrameMap {
        ignoreSIGPIPE()
        let pair = try scenario()
        let listener = try TLSListener(endpoint: .tcp(host: "127.0.0.1", port: 0), context: try Rig.serverContext())
        defer { listener.close() }
        guard case .tcp(_, let port) = listener.boundEndpoint else { throw SetupError("no port") }
        let proxy = try FaultProxy(targetPort: UInt16(port))
        defer { proxy.close() }
        let recorder = RecordingDestination(pair: pair)
        let dst = background { try recorder.serve(listener: listener) }
        let hook = dmaHook(pair) { recorder.waitFor(type: 5) }
        let sender = Sender(devices: pair.source, memory: pair.sourceMemory, options: Rig.senderOptions(), events: hook)
        let client = try Rig.clientContext()
        let src = background { () throws -> MigrationStats in
            let stream = try TLSConnector.connect(to: .tcp(host: "127.0.0.1", port: proxy.port), context: client, timeoutSeconds: 10)
            return try sender.run(stream: stream)
        }
        _ = try src.wait().get()
        let (up, down) = try dst.wait().get()
        guard let hs = proxy.handshakeBytes(.toReceiver), let first = proxy.recordLog(.toReceiver).first else {
            throw SetupError("the proxy did not see the handshake end")
        }
        return FrameMap(toReceiver: up, toSender: down, clientHandshakeBytes: hs, clientHelloRecordBytes: first.length)
    }
}

/// A destination that records frame offsets and answers just enough to finish.
final class RecordingDestination: @unchecked Sendable {
    private let pair: SimPair
    private let cond = NSCondition()
    private var seenTypes: Set<UInt16> = []
    init(pair: SimPair) { self.pair = pair }

    func waitFor(type: UInt16) {
        cond.lock(); defer { cond.unlock() }
        let deadline = Date(timeIntervalSinceNow: 30)
        while !seenTypes.contains(type) { if !cond.wait(until: deadline) { return } }
    }

    func serve(listener: TLSListener) throws -> ([FrameMap.Entry], [FrameMap.Entry]) {
        let stream = try listener.accept(timeoutSeconds: 30)
        defer { stream.close() }
        stream.readTimeoutSeconds = 30
        var encoder = FrameEncoder()
        var sent: [FrameMap.Entry] = []
        var sentBytes = 0
        func send(_ body: FrameBody) throws {
            let bytes = try encoder.encode(body)
            sent.append(.init(type: UInt16(bytes[4]), device: 0, plain: sentBytes..<(sentBytes + bytes.count), detail: 0))
            sentBytes += bytes.count
            try stream.write(bytes)
        }
        let session = (0..<16).map { _ in UInt8.random(in: 0...255) }
        try send(.hello(pair.destinationHello(sessionID: session)))
        var buffer: [UInt8] = []
        var offset = 0
        var entries: [FrameMap.Entry] = []
        func u32(_ b: ArraySlice<UInt8>, _ at: Int) -> UInt32 { let i = b.startIndex + at; return UInt32(b[i]) | UInt32(b[i+1]) << 8 | UInt32(b[i+2]) << 16 | UInt32(b[i+3]) << 24 }
        func u64(_ b: ArraySlice<UInt8>, _ at: Int) -> UInt64 { UInt64(u32(b, at)) | UInt64(u32(b, at + 4)) << 32 }
        while true {
            let bytes = try stream.read(maxCount: 1 << 16)
            if bytes.isEmpty { break }
            buffer += bytes
            while buffer.count >= 24 {
                let length = Int(u32(buffer[...], 12))
                guard buffer.count >= 24 + length else { break }
                let frame = buffer[0..<(24 + length)]
                let payload = frame.dropFirst(24)
                let type = UInt16(frame[4]) | UInt16(frame[5]) << 8
                var e = FrameMap.Entry(type: type, device: u32(frame, 8), plain: offset..<(offset + 24 + length), detail: 0)
                switch type {
                case 2: e.detail = UInt64(payload.first!)
                case 3: e.detail = UInt64(payload[payload.startIndex + 24])
                case 4: e.detail = u64(payload, 8); e.pageCount = UInt64(u32(payload, 16))
                case 5: e.detail = UInt64(u32(payload, 0))
                default: break
                }
                entries.append(e)
                offset += 24 + length
                buffer.removeFirst(24 + length)
                cond.lock(); seenTypes.insert(type); cond.broadcast(); cond.unlock()
                if type == 7 { try send(.ready) }
                if type == 9 { try send(.resumed) }
            }
        }
        return (entries, sent)
    }
}
