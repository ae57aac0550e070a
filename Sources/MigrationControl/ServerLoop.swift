import Glibc
import SyncPrimitives

/// The server thread: one poll loop over the wake pipe, the listening socket and
/// the controller. Everything here is touched by that thread only.
final class ServerLoop: @unchecked Sendable {  // handed to its thread once, used there only
    private var listener: ControlListener?
    private var controller: ControlConnection?
    private let configuration: ControlServer.Configuration
    private let dispatcher: CommandDispatcher
    private let shared: ServerShared
    private let requests: VMMRequests

    init(opened: ControlListener.Opened, configuration: ControlServer.Configuration,
         dispatcher: CommandDispatcher, shared: ServerShared, requests: VMMRequests) {
        self.configuration = configuration
        self.dispatcher = dispatcher
        self.shared = shared
        self.requests = requests
        switch opened {
        case .listening(let listener): self.listener = listener
        case .connected(let fd): pendingInherited = fd
        }
    }

    /// An inherited connected socket, admitted on the thread like an accepted one.
    private var pendingInherited: Int32?

    func run() {
        if let fd = pendingInherited { admit(fd); pendingInherited = nil }
        while true {
            var fds = pollSet()
            if poll(&fds, nfds_t(fds.count), -1) < 0 {
                if errno == EINTR { continue }
                configuration.log("control socket: poll failed: \(String(cString: strerror(errno)))")
                break
            }
            if fds[0].revents != 0, !deliverQueuedEvents() { break }
            if let listener, fds[1].revents != 0, let fd = listener.accept() { admit(fd) }
            if controller != nil, let revents = fds.last?.revents, fds.count == 3, revents != 0 { serveController(revents) }
        }
        shutDown()
    }

    /// [wake, listener (or an idle placeholder), controller?]
    private func pollSet() -> [pollfd] {
        var fds = [pollfd(fd: shared.wake.readEnd, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: listener?.fd ?? -1, events: Int16(POLLIN), revents: 0)]
        if let controller {
            let events = Int16(POLLIN) | (controller.wantsToWrite ? Int16(POLLOUT) : 0)
            fds.append(pollfd(fd: controller.fd, events: events, revents: 0))
        }
        return fds
    }

    /// Moves queued events to the controller; false when the server is stopping.
    private func deliverQueuedEvents() -> Bool {
        shared.wake.drain()
        let (lines, overflowed, stopping) = shared.take()
        if let controller {
            let fits = !overflowed && lines.allSatisfy { controller.enqueue($0) }
            if !fits { disconnect(reason: unreadOutput) }
        }
        return !stopping
    }

    /// Checks the peer, then takes it as the controller or turns it away.
    private func admit(_ fd: Int32) {
        let refusal: ControlError?
        var peer = PeerCredentials(pid: 0, uid: 0, gid: 0)
        do {
            peer = try PeerCredentials.of(socket: fd)
            try configuration.policy.admit(peer)
            refusal = controller == nil ? nil : .anotherControllerConnected
        } catch { refusal = error }
        if let refusal {
            configuration.log("control socket: refused a controller (pid \(peer.pid), uid \(peer.uid)): \(refusal)")
            turnAway(fd, refusal)
            return
        }
        let connection = ControlConnection(fd: fd, peer: peer, maxLineBytes: configuration.maxLineBytes,
                                           maxOutputBytes: configuration.maxQueuedOutputBytes)
        _ = connection.enqueue(ControlMessage.greeting(commands: CommandDispatcher.commands))
        controller = connection
        requests.controllerConnected()
        configuration.log("control socket: controller connected (pid \(peer.pid), uid \(peer.uid))")
    }

    /// One error line (it fits in an empty socket buffer), then close.
    private func turnAway(_ fd: Int32, _ refusal: ControlError) {
        let line = Array((ControlMessage.error(refusal, id: nil).jsonLine + "\n").utf8)
        _ = line.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT)) }
        close(fd)
    }

    private func serveController(_ revents: Int16) {
        guard let controller else { return }
        do {
            if revents & Int16(POLLOUT) != 0 { try controller.flush() }
            if revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
                let open = try controller.readAvailable { line, descriptors in dispatcher.reply(to: line, descriptors: &descriptors) }
                guard open else { return disconnect(reason: nil) }
                if controller.overflowed { return disconnect(reason: unreadOutput) }
                try controller.flush()  // replies go out at once, not on the next POLLOUT
            }
        } catch {
            disconnect(reason: "\(error)")
        }
    }

    private var unreadOutput: String { "it does not read its replies and events (\(configuration.maxQueuedOutputBytes) bytes queued)" }

    private func disconnect(reason: String?) {
        guard let controller else { return }
        controller.close()
        self.controller = nil
        requests.controllerDisconnected()
        configuration.log("control socket: controller (pid \(controller.peer.pid)) disconnected" + (reason.map { ": \($0)" } ?? ""))
    }

    private func shutDown() {
        if let controller {
            controller.flush(until: monotonicSeconds() + 1)
            controller.close()
            self.controller = nil
        }
        listener?.close()
        listener = nil
    }
}
