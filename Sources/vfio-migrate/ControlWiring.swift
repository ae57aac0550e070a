import ArgumentParser
import Foundation
import MigrationControl
import MigrationEngine
import SyncPrimitives

/// `--control unix:PATH|fd:N`, shared by `send` and `receive`.
struct ControlOptions: ParsableArguments {
    @Option(help: "Control socket for a VMM or orchestrator (QMP-shaped JSON lines; docs/EVENTS.md): unix:PATH (created mode 0600) or fd:N (inherited).")
    var control: String?
    /// Opt-in because a controller that is only an orchestrator (query, set) never
    /// answers `stop-guest`: with the handshake on, it would stall every switch-over.
    @Flag(name: .customLong("guest-handshake"), help: "The controller on --control is the VMM: send asks it to stop the guest (stop-guest, waiting \(Int(ControlGuestControl.stopTimeoutSeconds)) s for guest-stopped; refused or unanswered: roll back) before stop-and-copy and to resume it (resume-guest) after a rollback; receive tells it start-guest after COMMIT. Without a connected controller nothing is asked.")
    var guestHandshake = false
    /// Implied by any `fd:NAME`: those descriptors exist only once the VMM has added them.
    @Flag(name: .customLong("await-start"), help: "Open nothing (memory, devices, dirty log) until the controller on --control sends start; start is refused while a descriptor named on the command line (fd:NAME) or, with --dirty vmm, the dirty-log bitmap has not been handed over. Implied by any fd:NAME.")
    var awaitStart = false
    @Option(name: .customLong("start-timeout"), help: "Seconds to wait for start (--await-start); then exit 1, nothing opened.")
    var startTimeout: Double = 60

    func validate() throws {
        if guestHandshake, control == nil { throw ValidationError("--guest-handshake needs --control (the VMM answers on the control socket)") }
        if awaitStart, control == nil { throw ValidationError("--await-start needs --control (the VMM sends start on the control socket)") }
        try ArgumentCheck.seconds(startTimeout, "--start-timeout")
        guard let control else { return }
        do { _ = try ControlAddress(parsing: control) } catch { throw ValidationError("--control: \(error)") }
    }

    /// `fd:NAME` references come over the control socket, so they need one.
    func validate(descriptorNames names: [String]) throws {
        if let name = names.first, control == nil {
            throw ValidationError("fd:\(name) names a descriptor passed with add-fd, which needs --control")
        }
    }

    /// Opens the socket (before anything starts, so a VMM can connect early); nil without `--control`.
    /// `required`: the table names `start` waits for; nil when nothing waits for `start`.
    func start(role: ControlTarget.Role, printer: EventPrinter, clock: EventClock, awaiting required: [String]?) throws -> ControlSession? {
        guard let control else { return nil }
        return try ControlSession(address: ControlAddress(parsing: control), role: role, printer: printer, clock: clock,
                                  guestHandshake: guestHandshake, startGate: required.map { StartGate(requiredDescriptors: $0) })
    }

    /// `start` for `send`/`receive`: a failure is printed as the `failed` event and becomes the exit code.
    func open(role: ControlTarget.Role, printer: EventPrinter, clock: EventClock, devices: DeviceOptions) throws -> ControlSession? {
        do { return try start(role: role, printer: printer, clock: clock, awaiting: startRequirements(devices: devices)) } catch {
            throw failureExit(for: error, printer: printer, side: role == .source ? "source" : "destination")
        }
    }

    /// The names `start` must find, or nil when the CLI does not wait for it.
    func startRequirements(devices: DeviceOptions) -> [String]? {
        let names = devices.descriptorNames
        guard awaitStart || !names.isEmpty else { return nil }
        return names + (devices.wantsGuestDirtyLog ? [DirtyLogLayout.descriptorName] : [])
    }
}

/// The control server of one `send`/`receive` and what it controls: events are
/// mirrored to it, `query` reads the latest ones, commands reach the engine.
final class ControlSession: Sendable {
    let server: ControlServer
    let target: ControlTarget
    private let status: ControlStatusBox
    private let guestHandshake: Bool
    private let startGate: StartGate?

    init(address: ControlAddress, role: ControlTarget.Role, printer: EventPrinter, clock: EventClock,
         guestHandshake: Bool, startGate: StartGate?) throws {
        self.guestHandshake = guestHandshake
        self.startGate = startGate
        let target = ControlTarget(role: role)
        let status = ControlStatusBox()
        var configuration = ControlServer.Configuration(address: address)
        configuration.clock = clock
        configuration.startGate = startGate
        server = try ControlServer(configuration, handler: ControlAdapter(target: target, status: status))
        self.target = target
        self.status = status
        printer.mirror { [server] line, time in
            guard var data = try? JSONValue.parse(line).objectValue,
                  let name = data.removeValue(forKey: "event")?.stringValue else { return }
            data["timestamp"] = nil  // the event's own member on this channel
            server.emit(name, data: data, at: time)
        }
    }

    /// `--await-start`: blocks until the VMM sends `start` (nothing opened before);
    /// a timeout or `cancel` ends the run with nothing started (exit 1).
    func awaitStart(timeoutSeconds: Double) throws(MigrationError) {
        guard let startGate else { return }
        let outcome = startGate.wait(timeoutSeconds: timeoutSeconds)
        let failure: MigrationFailure
        switch outcome {
        case .started: return
        case .cancelled: failure = .cancelled
        case .timedOut: failure = .timeout("no start on the control socket within \(timeoutSeconds.formatted()) s (--await-start, --start-timeout)")
        case .serverClosed: failure = .configuration("the control socket closed before start")
        }
        throw MigrationError(phase: .connect, failure: failure, disposition: .notStarted)
    }

    /// What `fd:NAME` resolves against.
    var descriptors: HandedDescriptors { HandedDescriptors(table: server.descriptors) }

    /// Every engine event passes here before the printer (it keeps what `query` reports).
    func observe(_ event: MigrationEvent) { status.observe(event) }

    /// `--on-stall throttle` asks the VMM through this socket.
    var guestThrottle: any GuestThrottle { ControlGuestThrottle(server: server) }

    /// The stop/resume/start handshake through this socket; nil without `--guest-handshake`.
    var guestControl: (any GuestControl)? { guestHandshake ? ControlGuestControl(server: server) : nil }

    /// `--dirty vmm` / `--guest-dirty-log`: the guest's dirty pages through this socket.
    var guestDirtyLog: any GuestDirtyLog { ControlGuestDirtyLog(server: server) }

    func close() { server.close() }
}

/// The migration the socket drives, once it exists. A `cancel` that comes before
/// it is kept and applied when it is attached.
final class ControlTarget: Sendable {
    enum Role: Sendable { case source, destination }
    private struct State {
        var sender: Sender?
        var cancel: (@Sendable () -> Void)?
        var cancelled = false
    }
    let role: Role
    private let state = LockedValue(State())

    init(role: Role) { self.role = role }

    /// `sender` is nil on the destination; `cancel` is what SIGINT does.
    func attach(sender: Sender?, cancel: @escaping @Sendable () -> Void) {
        let cancelNow = state.withLock { s in s.sender = sender; s.cancel = cancel; return s.cancelled }
        if cancelNow { cancel() }
    }

    func cancel() {
        let action = state.withLock { s in s.cancelled = true; return s.cancel }
        action?()
    }

    /// The sender `set` and `switchover` act on; refused on the destination or before it exists.
    func sender(for command: String) throws(ControlError) -> Sender {
        guard role == .source else { throw .refused("\(command): the destination has no pre-copy to steer; send it to the source") }
        guard let sender = state.withLock({ $0.sender }) else { throw .refused("\(command): the migration has not started yet") }
        return sender
    }

    /// The live settings for `query` (empty on the destination).
    var parameters: ControlParameters {
        guard let sender = state.withLock({ $0.sender }) else { return ControlParameters() }
        let live = sender.runtimeParameters
        return ControlParameters(downtimeMs: live.downtimeTargetMs,
                                 bandwidth: sender.bandwidthBytesPerSecond.map { .bytesPerSecond($0) } ?? .unlimited,
                                 maxIterations: live.maxIterations)
    }
}

/// The server's `ControlHandler`: each call returns at once (the engine acts at
/// its next iteration boundary or write).
struct ControlAdapter: ControlHandler {
    let target: ControlTarget
    let status: ControlStatusBox

    func query() -> ControlStatus {
        var s = status.current
        s.parameters = target.parameters
        return s
    }

    func cancel() { target.cancel() }

    /// The two that can be refused first, so a refused `set` changes nothing.
    func set(_ parameters: ControlParameters) throws(ControlError) {
        let sender = try target.sender(for: "set")
        do throws(ParameterChangeError) {
            if let ms = parameters.downtimeMs { try sender.setDowntimeTarget(ms: ms) }
            if let n = parameters.maxIterations { try sender.setMaxIterations(n) }
        } catch {
            throw .refused("set: \(error)")
        }
        switch parameters.bandwidth {
        case .none: break
        case .unlimited: sender.setBandwidth(nil)
        case .bytesPerSecond(let rate): sender.setBandwidth(rate)
        }
    }

    func switchover() throws(ControlError) {
        try target.sender(for: "switchover").requestSwitchover()
    }
}

/// What `query` reports, from the latest phase, progress and iteration events.
final class ControlStatusBox: Sendable {
    private let status = LockedValue(ControlStatus(phase: "connect"))

    var current: ControlStatus { status.current }

    func observe(_ event: MigrationEvent) {
        status.withLock { s in
            switch event {
            case .phase(let p): s.phase = p.rawValue
            case .iterationEnd(let i, let pending, let dirty, _, _):
                s.iteration = i; s.pendingBytes = pending; s.dirtyPages = dirty
            case .progress(let p):
                s.phase = p.phase.rawValue; s.iteration = p.iteration
                s.rawBytes = p.rawBytes; s.wireBytes = p.wireBytes; s.bytesPerSecond = p.bytesPerSecond
                s.pendingBytes = p.pendingBytes; s.dirtyPages = p.dirtyPages; s.etaSeconds = p.etaSeconds
                s.connection = p.link?.connection.rawValue; s.outageSeconds = p.link?.outageSeconds
            default: break
            }
        }
    }
}

/// `--on-stall throttle` through the control socket: the VMM slows the vCPUs and
/// answers `throttled`. No controller (or no answer) is a refusal, so the source
/// switches over as it would without a VMM.
struct ControlGuestThrottle: GuestThrottle {
    let server: ControlServer
    /// The pre-copy loop waits for the answer; a VMM that takes longer is not throttling.
    static let answerTimeoutSeconds = 10.0

    enum Refusal: Error, CustomStringConvertible {
        case unanswered(VMMAnswer)
        var description: String {
            switch self {
            case .unanswered(.noController): return "no controller is connected"
            case .unanswered(let answer): return "no answer from the VMM (\(answer))"
            }
        }
    }

    func throttleGuest(percent: Int) throws {
        // Lifting a throttle nobody can have applied is a no-op, not a failure.
        if percent == 0, !server.hasController { return }
        let answer = server.ask(.throttle, data: ["percent": .int(Int64(percent))], timeoutSeconds: Self.answerTimeoutSeconds)
        guard case .answered = answer else { throw Refusal.unanswered(answer) }
    }
}

/// `--guest-handshake`: the switch-over handshake through the control socket.
/// No controller connected when it is time to stop the guest means no VMM in the
/// loop (today's behaviour); a connected one that refuses, goes away or stays
/// silent fails the step, and the source rolls back.
struct ControlGuestControl: GuestControl {
    let server: ControlServer
    /// The downtime clock runs while we wait; a VMM slower than this is not coming.
    static let stopTimeoutSeconds = 30.0

    enum Refusal: Error, CustomStringConvertible {
        case unanswered(VMMAnswer)
        case refused(String)
        var description: String {
            switch self {
            case .unanswered(.timedOut): return "no guest-stopped within \(Int(ControlGuestControl.stopTimeoutSeconds)) s of stop-guest"
            case .unanswered(.controllerGone): return "the controller disconnected before answering stop-guest"
            case .unanswered(let answer): return "stop-guest unanswered (\(answer))"
            case .refused(let why): return "the VMM refused stop-guest: \(why)"
            }
        }
    }

    func stopGuest() throws {
        let answer = server.ask(.stopGuest, timeoutSeconds: Self.stopTimeoutSeconds)
        switch answer {
        case .noController: return
        case .answered(let arguments):
            // A VMM that cannot pause answers with `error` rather than leaving us to time out.
            if let why = arguments["error"] { throw Refusal.refused(why.stringValue ?? "\(why)") }
        default: throw Refusal.unanswered(answer)
        }
    }

    func resumeGuest() { server.notify(.resumeGuest) }
    func startGuest() { server.notify(.startGuest) }
}

/// `--dirty vmm` / `--guest-dirty-log`: the guest's dirty pages from the VMM on
/// the control socket. Each round is one `dirty-sync` (the VMM overwrites the
/// shared bitmap, then answers `dirty-synced`), then one copy of the bitmap, so
/// the round's windows all read the same harvest and the VMM may refill the
/// bitmap as soon as it answered.
final class ControlGuestDirtyLog: GuestDirtyLog, Sendable {
    let server: ControlServer
    /// The copy happens inside the downtime on the last round; a VMM slower than this is not answering.
    static let syncTimeoutSeconds = 10.0
    private let mapping = LockedValue<DirtyLogMapping?>(nil)

    init(server: ControlServer) { self.server = server }

    func start(pageSize: UInt64, pageCount: UInt64) throws(GuestDirtyLogError) {
        guard let layout = server.dirtyLogLayout,
              let fd = server.descriptors.descriptor(named: DirtyLogLayout.descriptorName) else {
            throw GuestDirtyLogError("no dirty-log-setup was done on the control socket; the VMM must hand over its bitmap before the migration starts")
        }
        // A bitmap of other pages would re-send the wrong ones: refuse rather than translate.
        guard layout.pageSize == pageSize, layout.pageCount == pageCount else {
            throw GuestDirtyLogError("dirty-log-setup covers \(layout.pageCount) pages of \(layout.pageSize) bytes; the guest memory is \(pageCount) pages of \(pageSize) bytes")
        }
        let mapped = try DirtyLogMapping(fd: fd, layout: layout)
        mapping.withLock { $0 = mapped }
    }

    func sync() throws(GuestDirtyLogError) -> GuestDirtySnapshot {
        guard let mapped = mapping.current else { throw GuestDirtyLogError("dirty-sync before the log was started") }
        let answer = server.ask(.dirtySync, timeoutSeconds: Self.syncTimeoutSeconds)
        guard case .answered(let arguments) = answer else {
            // Without the VMM's harvest the destination would miss guest writes: fail, never guess.
            throw GuestDirtyLogError("dirty-sync unanswered (\(answer))")
        }
        if let why = arguments["error"] { throw GuestDirtyLogError("the VMM refused dirty-sync: \(why.stringValue ?? "\(why)")") }
        return mapped.snapshot()
    }
}

/// The VMM's bitmap, mapped read-only and shared (we never write it; the VMM's
/// stores are seen without a copy through the descriptor). Unmapped when released.
final class DirtyLogMapping: @unchecked Sendable {  // `base` is only read, the mapping is immutable
    private let base: UnsafeRawPointer
    private let byteCount: Int
    let layout: DirtyLogLayout

    init(fd: Int32, layout: DirtyLogLayout) throws(GuestDirtyLogError) {
        guard let p = mmap(nil, layout.byteCount, PROT_READ, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            throw GuestDirtyLogError("cannot map the dirty-log descriptor: \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(p)
        byteCount = layout.byteCount
        self.layout = layout
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: base), byteCount) }

    /// The words as they are now (little-endian in the file, whatever the host).
    func snapshot() -> GuestDirtySnapshot {
        let words = (0..<(byteCount / 8)).map { UInt64(littleEndian: base.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self)) }
        return GuestDirtySnapshot(words: words, pageCount: layout.pageCount)
    }
}
