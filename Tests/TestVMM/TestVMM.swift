import Glibc
import MigrationControl
import SyncPrimitives

/// A VMM for the tests, the other end of `vfio-migrate send --control fd:N
/// --guest-handshake --dirty vmm`: it owns a running guest (KVM when usable) in a
/// memfd it hands to the transport, and answers the transport's requests as
/// docs/EVENTS.md says a VMM does — `dirty-log-setup` first, then `dirty-sync`
/// (harvest the guest's dirty log into the shared bitmap), `stop-guest` (pause
/// the vCPU, then snapshot the memory), `resume-guest`.
public final class TestVMM {
    /// What `dirty-sync` puts in the shared bitmap.
    public enum DirtyReporting: Sendable {
        /// The guest's dirty log as harvested: what a VMM must do.
        case harvested
        /// Nothing, whatever the guest wrote (the negative control: the log still
        /// is harvested and counted, just not reported).
        case empty
    }

    public let guest: RunningGuest
    public let memory: SharedMemoryFile
    private let bitmap: SharedMemoryFile
    private let layout: DirtyLogLayout
    private let reporting: DirtyReporting
    private let control: ControlClient
    /// The socket end the child inherits; ours is closed once it has it, so its exit reads as EOF here.
    private var childEnd: Int32?
    /// `pagesWritten` at the previous harvest (or at `dirty-log-setup`).
    private var pagesAtLastHarvest = 0

    public init(memoryBytes: Int, reporting: DirtyReporting, useKVM: Bool = true) throws(TestVMMError) {
        do {
            memory = try SharedMemoryFile(name: "test-vmm-guest-ram", byteCount: memoryBytes)
            layout = DirtyLogLayout(pageSize: UInt64(CounterSweepProgram.pageSize), pageCount: UInt64(memoryBytes / CounterSweepProgram.pageSize))
            bitmap = try SharedMemoryFile(name: "test-vmm-dirty-log", byteCount: layout.byteCount)
        } catch {
            throw .guest(error)
        }
        var ends: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &ends) == 0 else {
            throw .setup("socketpair: \(String(cString: strerror(errno)))")
        }
        control = ControlClient(connected: ends[0])
        childEnd = ends[1]
        self.reporting = reporting
        guest = RunningGuest.start(in: memory, useKVM: useKVM)
    }

    deinit {
        guest.stop()
        if let childEnd { close(childEnd) }
    }

    /// The descriptor to hand the child as its `--control fd:N`.
    public var childControlDescriptor: Int32 { childEnd ?? -1 }

    /// Before the child is spawned: `dirty-log-setup` with the bitmap memfd,
    /// written into the socket now, so the transport reads it as soon as its
    /// server starts, ahead of any migration step. Sent after the spawn, a loaded
    /// machine can let pre-copy begin first, which the transport refuses.
    public func handOverDirtyLog() throws(TestVMMError) {
        let arguments: [String: JSONValue] = ["page-size": JSONValue(Int(layout.pageSize)), "pages": JSONValue(layout.pageCount)]
        let line = JSONValue.object(["execute": .string("dirty-log-setup"), "arguments": .object(arguments)]).jsonLine + "\n"
        do throws(ControlError) { try control.send(raw: Array(line.utf8), descriptor: bitmap.fd) } catch {
            throw .control("dirty-log-setup: \(error)")
        }
        pagesAtLastHarvest = guest.pagesWritten
    }

    /// After the child was spawned: drop our copy of its end.
    public func childStarted() {
        if let childEnd { close(childEnd) }
        childEnd = nil
    }

    /// Plays the VMM until the transport reports `finished` or `failed` (or hangs
    /// up): checks the reply to `dirty-log-setup`, then answers every request.
    public func serve(timeoutSeconds: Double = 60) throws(TestVMMError) -> VMMRecord {
        var record = VMMRecord(mode: guest.mode)
        let setup: JSONValue
        do throws(ControlError) {
            _ = try control.nextMessage(timeoutSeconds: 10)  // the greeting
            setup = try control.nextReply(timeoutSeconds: 10)
        } catch {
            throw .control("dirty-log-setup: \(error)")
        }
        guard setup["return"] != nil else { throw .setup("dirty-log-setup refused: \(setup)") }
        record.events = control.events.compactMap { $0["event"]?.stringValue }
        let deadline = monotonicSeconds() + timeoutSeconds
        do throws(ControlError) {
            while record.outcome == nil {
                let message = try control.nextMessage(timeoutSeconds: max(0.1, deadline - monotonicSeconds()))
                try handle(message, &record)
            }
        } catch {
            guard case .serverClosed = error else { throw .control("\(error) after events \(record.events)") }
            record.outcome = .hungUp
        }
        record.guestFailure = guest.failure
        return record
    }

    private func handle(_ message: JSONValue, _ record: inout VMMRecord) throws(ControlError) {
        guard let name = message["event"]?.stringValue else {
            if let error = message["error"] { record.refusedAnswers.append("\(error)") }  // a reply to one of our answers
            return
        }
        record.events.append(name)
        let request = message["data"]?["request"] ?? .null
        switch name {
        case "dirty-sync":
            try answer("dirty-synced", request: request) { () throws(KVMError) in try self.syncDirtyLog(&record) }
        case "stop-guest":
            try answer("guest-stopped", request: request) { () throws(KVMError) in
                guest.pause()
                record.pagesWrittenAtStop = guest.pagesWritten
                record.snapshotAtStop = memory.snapshot()
            }
        case "resume-guest":
            try answer("guest-resumed", request: request) { () throws(KVMError) in guest.resume() }
        case "finished": record.outcome = .finished
        case "failed": record.outcome = .failed(message["data"]?["cause"]?.stringValue ?? "\(message)")
        default: break
        }
    }

    /// KVM_GET_DIRTY_LOG (or the writer's log) → the shared bitmap, word for word.
    /// A running guest first completes a whole sweep since the previous harvest:
    /// then every round holds guest writes however loaded the machine is (the
    /// tests are about the transport, not the scheduler), and every page is
    /// rewritten between two rounds.
    private func syncDirtyLog(_ record: inout VMMRecord) throws(KVMError) {
        if !guest.isPaused { _ = guest.waitForPagesWritten(pagesAtLastHarvest + guest.program.dataPages, seconds: 5) }
        pagesAtLastHarvest = guest.pagesWritten
        let words = try guest.harvestDirtyLog()
        record.harvestedPagesPerSync.append(words.reduce(0) { $0 + $1.nonzeroBitCount })
        switch reporting {
        case .harvested: bitmap.storeWords(words)
        case .empty: bitmap.storeWords([UInt64](repeating: 0, count: words.count))
        }
    }

    /// Does `work`, then sends `command` echoing `request`; a failure is answered with `error`.
    private func answer(_ command: String, request: JSONValue, _ work: () throws(KVMError) -> Void) throws(ControlError) {
        var arguments: [String: JSONValue] = ["request": request]
        do { try work() } catch { arguments["error"] = .string("\(error)") }
        let line = JSONValue.object(["execute": .string(command), "arguments": .object(arguments)]).jsonLine + "\n"
        try control.send(raw: Array(line.utf8))
    }
}

/// What the test VMM saw and did during one migration.
public struct VMMRecord: Sendable {
    public enum Outcome: Sendable, Equatable {
        case finished
        case failed(String)
        /// The transport closed the socket without `finished` or `failed`.
        case hungUp
    }

    public let mode: GuestMode
    /// Event names in arrival order.
    public var events: [String] = []
    /// Pages the guest had dirtied, as harvested at each `dirty-sync` (reported or not).
    public var harvestedPagesPerSync: [Int] = []
    /// Guest memory when the vCPU was paused for `stop-guest`.
    public var snapshotAtStop: [UInt8]?
    public var pagesWrittenAtStop: Int?
    /// Error replies to the VMM's answers (none expected).
    public var refusedAnswers: [String] = []
    /// Why the guest stopped on its own (none expected).
    public var guestFailure: String?
    public var outcome: Outcome?

    init(mode: GuestMode) { self.mode = mode }
}

public enum TestVMMError: Error, CustomStringConvertible {
    case guest(KVMError)
    case setup(String)
    case control(String)

    public var description: String {
        switch self {
        case .guest(let error): "the test VMM's guest: \(error)"
        case .setup(let why): "the test VMM's setup: \(why)"
        case .control(let why): "the test VMM's control socket: \(why)"
        }
    }
}
