import MigrationTLS
import VFIODevice

/// The source side of migrations: HELLO, pre-copy, stop-and-copy, commit.
/// Any failure before COMMIT puts the devices back to RUNNING. Each `run` is one
/// `SourceSession`; `cancel` may come from any thread.
public final class Sender: Sendable {
    private let devices: [SourceDevice]
    private let memory: GuestMemory?
    private let options: SenderOptions
    private let events: EventSink
    private let cancellation = Cancellation()

    public init(devices: [SourceDevice], memory: GuestMemory?, options: SenderOptions, events: @escaping EventSink = { _ in }) {
        self.devices = devices; self.memory = memory; self.options = options
        let logger = options.logger
        self.events = { event in logEvent(event, to: logger); events(event) }
    }

    /// Cancels before COMMIT (clean rollback); ignored once COMMIT is on its way.
    public func cancel() { cancellation.cancel() }

    /// Runs the migration over an authenticated stream.
    public func run(stream: TLSStream) throws(MigrationError) -> MigrationStats {
        let cancelledBeforeStart = cancellation.attach(stream)
        return try SourceSession(devices: devices, memory: memory, options: options, events: events, stream: stream,
                                 cancellation: cancellation, cancelledBeforeStart: cancelledBeforeStart).run()
    }
}
