import Glibc
import MigrationControl

/// The source's VMM for the tests, the other end of `vfio-migrate send --control
/// fd:N --await-start --guest-handshake --dirty vmm`: it owns a running guest (KVM when usable)
/// in a memfd it hands to the transport, and answers the transport's requests as
/// docs/EVENTS.md says a VMM does — `dirty-log-setup` and `start` first, then `dirty-sync`
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
    private let channel: ControlChannel

    public init(memoryBytes: Int, reporting: DirtyReporting, useKVM: Bool = true) throws(TestVMMError) {
        do {
            memory = try SharedMemoryFile(name: "test-vmm-guest-ram", byteCount: memoryBytes)
            layout = DirtyLogLayout(pageSize: UInt64(CounterSweepProgram.pageSize), pageCount: UInt64(memoryBytes / CounterSweepProgram.pageSize))
            bitmap = try SharedMemoryFile(name: "test-vmm-dirty-log", byteCount: layout.byteCount)
        } catch {
            throw .guest(error)
        }
        channel = try ControlChannel()
        self.reporting = reporting
        guest = RunningGuest.start(in: memory, useKVM: useKVM)
    }

    deinit { guest.stop() }

    /// The descriptor to hand the child as its `--control fd:N`.
    public var childControlDescriptor: Int32 { channel.childDescriptor }

    /// After the child was spawned: drop our copy of its end.
    public func childStarted() { channel.childStarted() }

    /// For `send --await-start`: `dirty-log-setup` with the bitmap memfd, then
    /// `start` (README, "Driving it from a VMM"). Written into the socket before
    /// the child runs, they wait there until its control server reads them, in order.
    public func handOverDirtyLogAndStart() throws(TestVMMError) {
        let arguments: [String: JSONValue] = ["page-size": JSONValue(Int(layout.pageSize)), "pages": JSONValue(layout.pageCount)]
        do throws(ControlError) {
            try channel.send("dirty-log-setup", arguments, descriptor: bitmap.fd)
            try channel.send("start", [:])
        } catch {
            throw .control("dirty-log-setup and start: \(error)")
        }
    }

    /// Plays the VMM until the transport reports `finished` or `failed` (or hangs up).
    public func serve(timeoutSeconds: Double = 60) throws(TestVMMError) -> VMMRecord {
        var record = VMMRecord(mode: guest.mode)
        let session = try channel.serve(timeoutSeconds: timeoutSeconds) { (label, event) throws(ControlError) in
            switch label {
            case "dirty-sync":
                try channel.answer("dirty-synced", to: event) { () throws(KVMError) in try syncDirtyLog(&record) }
            case "stop-guest":
                try channel.answer("guest-stopped", to: event) { () throws(KVMError) in
                    guest.pause()
                    record.pagesWrittenAtStop = guest.pagesWritten
                    record.snapshotAtStop = memory.snapshot()
                }
            case "resume-guest":
                try channel.answer("guest-resumed", to: event) { () throws(KVMError) in guest.resume() }
            default: break
            }
        }
        record.session = session
        record.guestFailure = guest.failure
        return record
    }

    /// KVM_GET_DIRTY_LOG (or the writer's log) → the shared bitmap, word for word.
    /// A running guest first completes a whole sweep after the request: every
    /// page is rewritten after the transport read it in the round before, and
    /// every round holds guest writes however loaded the machine is (the tests
    /// are about the transport, not the scheduler). A VMM may take its time; the
    /// transport waits 10 s.
    private func syncDirtyLog(_ record: inout VMMRecord) throws(KVMError) {
        if !guest.isPaused { _ = guest.waitForPagesWritten(guest.pagesWritten + guest.program.dataPages, seconds: 5) }
        let words = try guest.harvestDirtyLog()
        record.harvestedPagesPerSync.append(words.reduce(0) { $0 + $1.nonzeroBitCount })
        switch reporting {
        case .harvested: bitmap.storeWords(words)
        case .empty: bitmap.storeWords([UInt64](repeating: 0, count: words.count))
        }
    }
}

/// What the source's test VMM saw and did during one migration.
public struct VMMRecord: Sendable {
    public let mode: GuestMode
    public var session = VMMSession()
    /// Pages the guest had dirtied, as harvested at each `dirty-sync` (reported or not).
    public var harvestedPagesPerSync: [Int] = []
    /// Guest memory when the vCPU was paused for `stop-guest`.
    public var snapshotAtStop: [UInt8]?
    public var pagesWrittenAtStop: Int?
    /// Why the guest stopped on its own (none expected).
    public var guestFailure: String?

    init(mode: GuestMode) { self.mode = mode }
}
