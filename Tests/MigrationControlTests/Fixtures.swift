import Foundation
import MigrationControl
import SyncPrimitives

/// The engine's stand-in: records what the server asked of it.
final class RecordingHandler: ControlHandler {
    struct Record { var cancels = 0, switchovers = 0, sets: [ControlParameters] = [] }
    let record = LockedValue(Record())
    let status: ControlStatus
    /// When set, `set` refuses with this reason (as the engine would after switch-over).
    let refusal: String?

    init(status: ControlStatus = ControlStatus(phase: "precopy", iteration: 3, rawBytes: 4096, wireBytes: 1024,
                                               bytesPerSecond: 2048.5, pendingBytes: 8192, dirtyPages: 2, etaSeconds: 1.5,
                                               parameters: ControlParameters(downtimeMs: 300, bandwidth: .unlimited, maxIterations: 30)),
         refusal: String? = nil) {
        self.status = status
        self.refusal = refusal
    }

    func query() -> ControlStatus { status }
    func cancel() { record.withLock { $0.cancels += 1 } }
    func switchover() { record.withLock { $0.switchovers += 1 } }
    func set(_ parameters: ControlParameters) throws(ControlError) {
        if let refusal { throw .refused(refusal) }
        record.withLock { $0.sets.append(parameters) }
    }
}

/// A private directory per test, removed at the end.
final class Scratch {
    let directory: String

    init() {
        directory = NSTemporaryDirectory() + "control-\(getpid())-\(UUID().uuidString.prefix(8))"
        try! FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    var socketPath: String { directory + "/control.sock" }
}

/// A server on a fresh socket path plus a connected client that has read the greeting.
struct Rig {
    let scratch = Scratch()
    let handler: RecordingHandler
    let server: ControlServer
    let client: ControlClient
    let logs: LockedValue<[String]>

    init(handler: RecordingHandler = RecordingHandler(), configure: (inout ControlServer.Configuration) -> Void = { _ in }) throws {
        let logs = LockedValue<[String]>([])
        var configuration = ControlServer.Configuration(address: .unix(path: scratch.socketPath))
        configuration.log = { line in logs.withLock { $0.append(line) } }
        configure(&configuration)
        self.handler = handler
        self.logs = logs
        server = try ControlServer(configuration, handler: handler)
        client = try ControlClient(path: scratch.socketPath)
        _ = try client.nextMessage()  // the greeting
    }
}

/// memfd_create is not in Swift's Glibc module (it is _GNU_SOURCE); glibc exports it.
func makeMemfd(_ name: String) -> Int32 {
    typealias MemfdCreate = @convention(c) (UnsafePointer<CChar>, UInt32) -> Int32
    guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "memfd_create") else { return -1 }
    return unsafeBitCast(symbol, to: MemfdCreate.self)(name, 1 /* MFD_CLOEXEC */)
}

extension JSONValue {
    var errorClass: String? { self["error"]?["class"]?.stringValue }
    var errorText: String? { self["error"]?["desc"]?.stringValue }
}
