import MigrationControl

/// The destination's VMM for the tests, the other end of `vfio-migrate receive
/// --memory fd:N --control fd:M --guest-handshake`: it hands over an empty memfd
/// for the guest's memory and, on `start-guest` (sent after COMMIT), runs a vCPU
/// over what arrived — entered at 0:0 like any guest the VMM starts from its
/// memory, it goes on from the migrated sweep counter — for one whole sweep.
public final class DestinationVMM {
    public let memory: SharedMemoryFile
    private let channel: ControlChannel
    private let useKVM: Bool

    public init(memoryBytes: Int, useKVM: Bool = true) throws(TestVMMError) {
        do { memory = try SharedMemoryFile(name: "test-vmm-destination-ram", byteCount: memoryBytes) } catch { throw .guest(error) }
        channel = try ControlChannel()
        self.useKVM = useKVM
    }

    public var childControlDescriptor: Int32 { channel.childDescriptor }
    public func childStarted() { channel.childStarted() }

    /// Plays the VMM until the transport reports `finished` or `failed` (or hangs up).
    public func serve(timeoutSeconds: Double = 60) throws(TestVMMError) -> DestinationRecord {
        var record = DestinationRecord()
        let session = try channel.serve(timeoutSeconds: timeoutSeconds) { (label, event) throws(ControlError) in
            guard label == "start-guest" else { return }
            record.memoryAtStart = memory.snapshot()
            let guest = RunningGuest.start(in: memory, useKVM: useKVM, paused: true, loadingCode: false)
            guest.run(untilPagesWritten: guest.program.dataPages)
            record.memoryAfterOneSweep = memory.snapshot()
            record.mode = guest.mode
            record.guestFailure = guest.failure
            guest.stop()
            // `start-guest` is not awaited: the receiver may have exited already.
            try? channel.answer("guest-started", to: event) { () throws(KVMError) in }
        }
        record.session = session
        return record
    }
}

/// What the destination's test VMM saw and did.
public struct DestinationRecord: Sendable {
    public var session = VMMSession()
    /// The guest memory when `start-guest` arrived, and after the guest ran one sweep on it.
    public var memoryAtStart: [UInt8]?
    public var memoryAfterOneSweep: [UInt8]?
    public var mode: GuestMode?
    public var guestFailure: String?
}
