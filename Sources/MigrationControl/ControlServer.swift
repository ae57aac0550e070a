import Foundation
import SyncPrimitives

/// The control socket (`--control unix:PATH` or `--control fd:N`): QMP-shaped
/// JSON lines, one command → one reply, events pushed to the controller.
/// All socket I/O runs on one dedicated thread (blocking I/O does not belong on
/// the cooperative pool); other threads only queue events and wait for answers.
public final class ControlServer: Sendable {
    public struct Configuration: Sendable {
        public var address: ControlAddress
        public var policy = PeerPolicy()
        /// A longer request line gets an error reply and is discarded.
        public var maxLineBytes = 64 * 1024
        /// A controller that lets this much output pile up is disconnected.
        public var maxQueuedOutputBytes = 4 << 20
        public var clock = EventClock()
        /// Refusals and disconnects, for the CLI's logger (this module has none).
        public var log: @Sendable (String) -> Void = { _ in }
        /// Set: the CLI waits for the `start` command before it opens anything.
        public var startGate: StartGate?

        public init(address: ControlAddress) { self.address = address }
    }

    /// Descriptors received with `add-fd`; the server closes what is left at `close()`.
    public let descriptors = DescriptorTable()
    let requests = VMMRequests()
    let shared: ServerShared
    private let dirtyLog = LockedValue<DirtyLogLayout?>(nil)
    private let clock: EventClock
    private let finished = ConditionValue(false)

    /// Opens the socket and starts serving; throws before any thread starts.
    public init(_ configuration: Configuration, handler: any ControlHandler) throws(ControlError) {
        clock = configuration.clock
        shared = ServerShared(wake: try WakePipe(), maxQueuedBytes: configuration.maxQueuedOutputBytes)
        let opened = try ControlListener.open(configuration.address)
        let dispatcher = CommandDispatcher(handler: handler, descriptors: descriptors, requests: requests,
                                           dirtyLog: dirtyLog, lastEvent: { [shared] in shared.lastEvent },
                                           startGate: configuration.startGate)
        let loop = ServerLoop(opened: opened, configuration: configuration, dispatcher: dispatcher, shared: shared, requests: requests)
        let thread = Thread { [finished, descriptors, requests, startGate = configuration.startGate] in
            loop.run()
            startGate?.close()
            requests.close()
            descriptors.closeAll()
            finished.withLock { $0 = true }
        }
        thread.name = "vfio-migrate control socket"
        thread.start()
    }

    /// Pushes an event to the connected controller (dropped when none is).
    /// Names and data are docs/EVENTS.md's; the timestamp is now, unless the
    /// caller stamped the event already (the `--json` line it mirrors).
    public func emit(_ name: String, data: [String: JSONValue] = [:], at time: EventTimestamp? = nil) {
        shared.push(ControlMessage.event(name, data: data, at: time ?? clock.now()))
    }

    /// Asks the VMM for `request` and waits for its answer command, at most
    /// `timeoutSeconds` (nil: until answered or the controller goes).
    /// Never call it from a `ControlHandler` method: the answer is read by the
    /// very thread that would be waiting.
    public func ask(_ request: VMMRequest, data: [String: JSONValue] = [:], timeoutSeconds: Double?) -> VMMAnswer {
        guard let opened = requests.open(request) else { return finished.withLock({ $0 }) ? .serverClosed : .noController }
        emit(request.rawValue, data: data.merging(["request": .int(Int64(opened.sequence))]) { $1 })
        let deadline = timeoutSeconds.map { monotonicSeconds() + $0 }
        return requests.wait(for: request, sequence: opened.sequence, generation: opened.generation, deadline: deadline)
    }

    /// Tells the VMM without waiting (its answer, if it sends one, is accepted).
    /// False when no controller is connected.
    @discardableResult
    public func notify(_ request: VMMRequest, data: [String: JSONValue] = [:]) -> Bool {
        guard let opened = requests.open(request) else { return false }
        emit(request.rawValue, data: data.merging(["request": .int(Int64(opened.sequence))]) { $1 })
        return true
    }

    public var hasController: Bool { requests.hasController }

    /// The bitmap layout from `dirty-log-setup`; its descriptor is `descriptors.descriptor(named: "dirty-log")`.
    public var dirtyLogLayout: DirtyLogLayout? { dirtyLog.current }

    /// Flushes queued events (briefly), closes the controller, removes the socket
    /// file and closes every descriptor still in the table. Idempotent; returns
    /// when the server thread has ended.
    public func close() {
        shared.stop()
        finished.wait(until: { $0 }) { _, _ in }
    }
}

/// What other threads share with the server thread: events to send, the last
/// one (for `query`), and the stop request; the wake pipe tells it to look.
final class ServerShared: Sendable {
    struct Outgoing {
        var lines: [JSONValue] = []
        var queuedBytes = 0
        var overflowed = false
        var stopping = false
        var lastEvent: JSONValue?
    }
    let wake: WakePipe
    private let maxQueuedBytes: Int
    private let outgoing = LockedValue(Outgoing())

    init(wake: WakePipe, maxQueuedBytes: Int) {
        self.wake = wake
        self.maxQueuedBytes = maxQueuedBytes
    }

    var lastEvent: JSONValue? { outgoing.withLock { $0.lastEvent } }

    func push(_ event: JSONValue) {
        let size = event.jsonLine.utf8.count
        outgoing.withLock { o in
            o.lastEvent = event
            if o.stopping { return }
            // The server thread has not drained the queue: the controller is stuck.
            guard o.queuedBytes + size <= maxQueuedBytes else { o.overflowed = true; return }
            o.lines.append(event)
            o.queuedBytes += size
        }
        wake.signal()
    }

    func stop() {
        outgoing.withLock { $0.stopping = true }
        wake.signal()
    }

    /// Takes the queued events; `stopping` tells the loop to finish.
    func take() -> (lines: [JSONValue], overflowed: Bool, stopping: Bool) {
        outgoing.withLock { o in
            defer { o.lines = []; o.queuedBytes = 0; o.overflowed = false }
            return (o.lines, o.overflowed, o.stopping)
        }
    }
}
