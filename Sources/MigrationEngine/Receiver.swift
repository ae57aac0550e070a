import MigrationTLS
import VFIODevice

/// The destination side of migrations: checks the source's HELLO, puts the
/// devices in RESUMING, applies device chunks and pages in received order,
/// verifies each device's digest, answers READY, and resumes only on COMMIT.
/// Each `run` is one `DestinationSession`; a receiver may run one after another.
public final class Receiver: Sendable {
    private let devices: [DestinationDevice]
    private let memory: GuestMemory?
    private let options: ReceiverOptions
    private let events: EventSink
    private let cancellation = Cancellation()

    public init(devices: [DestinationDevice], memory: GuestMemory?, options: ReceiverOptions, events: @escaping EventSink = { _ in }) {
        self.devices = devices; self.memory = memory; self.options = options
        let logger = options.logger
        self.events = { event in logEvent(event, to: logger); events(event) }
    }

    /// Abandons the session (before COMMIT the devices stay stopped).
    public func cancel() { cancellation.cancel() }

    /// With `listener` (the one `stream` came from) and a version-2 stream (ALPN,
    /// `ReceiverOptions.applicationProtocols`), the session survives a lost
    /// connection: its source may come back on the listener within `reconnectTimeoutSeconds`.
    public func run(stream: TLSStream, listener: TLSListener? = nil) throws(MigrationError) -> MigrationStats {
        _ = cancellation.attach(stream)  // a cancel that came first is seen once the devices are ready
        return try DestinationSession(devices: devices, memory: memory, options: options, events: events,
                                      stream: stream, listener: listener, cancellation: cancellation).run()
    }
}
